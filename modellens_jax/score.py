"""``python -m modellens_jax.score``: the command of :mod:`modellens_jax.serving.score`."""

import sys

from modellens_jax.serving.score import main

if __name__ == "__main__":
    sys.exit(main())
