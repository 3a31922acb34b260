"""modellens-jax: learn from leaderboard records which pretrained model will do best on a dataset.

The serving API is importable from the package root (loaded on first use, so ``import
modellens_jax`` stays light)::

    from modellens_jax import Recommender
    rec = Recommender.load("runs/default/bundle")
"""

import logging as _logging
import os as _os

__version__ = "0.1.0"
__all__ = ["Bundle", "BundleError", "InputError", "Recommendation", "Recommender"]

# transformers prints "PyTorch was not found..." on import (we use it for tokenizers and
# configs only), and jax logs every accelerator backend it cannot find at INFO under absl.
_os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
_logging.getLogger("jax._src.xla_bridge").setLevel(_logging.WARNING)


_FROM = {"Bundle": "bundle", "BundleError": "bundle"}  # the rest from serving.recommender


def __getattr__(name: str):
    if name in __all__:
        import importlib

        module = importlib.import_module(f"modellens_jax.serving.{_FROM.get(name, 'recommender')}")
        return getattr(module, name)
    raise AttributeError(f"module 'modellens_jax' has no attribute {name!r}")
