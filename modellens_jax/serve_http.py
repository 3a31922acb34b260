"""``python -m modellens_jax.serve_http``: the command of :mod:`modellens_jax.serving.http`."""

import sys

from modellens_jax.serving.http import main

if __name__ == "__main__":
    sys.exit(main())
