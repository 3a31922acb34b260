"""``python -m modellens_jax.serve``: the command of :mod:`modellens_jax.serving.bench`."""

import sys

from modellens_jax.serving.bench import main

if __name__ == "__main__":
    sys.exit(main())
