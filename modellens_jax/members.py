"""``python -m modellens_jax.members`` at its old path; the command is
``modellens_jax.experiments.members``."""

import sys

from modellens_jax.experiments.members import main

if __name__ == "__main__":
    sys.exit(main())
