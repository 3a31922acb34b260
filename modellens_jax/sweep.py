"""The sweep command's old path: ``python -m modellens_jax.sweep`` runs ``launch/sweep.py``
(the declaration and planning are ``modellens_jax.experiments.sweep``)."""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[0] = str(Path(__file__).resolve().parents[1] / "launch" / "sweep.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
