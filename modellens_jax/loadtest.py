"""``python -m modellens_jax.loadtest``: the command of :mod:`modellens_jax.serving.loadtest`."""

import sys

from modellens_jax.serving.loadtest import main

if __name__ == "__main__":
    sys.exit(main())
