"""``python -m modellens_jax.recommend``: the command of :mod:`modellens_jax.serving.recommend`."""

import sys

from modellens_jax.serving.recommend import main

if __name__ == "__main__":
    sys.exit(main())
