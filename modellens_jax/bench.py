"""``python -m modellens_jax.bench`` at its old path; the command is
``modellens_jax.experiments.bench``."""

import sys

from modellens_jax.experiments.bench import main

if __name__ == "__main__":
    sys.exit(main())
