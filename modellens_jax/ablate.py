"""``python -m modellens_jax.ablate`` at its old path; the command is
``modellens_jax.experiments.ablate``."""

import sys

from modellens_jax.experiments.ablate import main

if __name__ == "__main__":
    sys.exit(main())
