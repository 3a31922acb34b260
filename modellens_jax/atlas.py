"""``python -m modellens_jax.atlas``: the command of :mod:`modellens_jax.serving.atlas`."""

import sys

from modellens_jax.serving.atlas import main

if __name__ == "__main__":
    sys.exit(main())
