"""One writer for metrics: JSON lines and TensorBoard event files, from process 0 only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np


class MetricWriter:
    """``write(step, {name: scalar})`` appends to ``metrics.jsonl`` and TensorBoard events."""

    def __init__(self, workdir: str | Path, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = Path(workdir) / "metrics.jsonl"
        self._tb = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", buffering=1)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(Path(workdir) / "tb"), flush_secs=30)

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: float(np.asarray(v)) for k, v in scalars.items()}
        self._f.write(json.dumps({"step": int(step), "time": time.time(), **clean}) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, int(step))

    def write_text(self, name: str, text: str) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_text(name, text)

    def close(self) -> None:
        if self.enabled:
            self._f.close()
            if self._tb is not None:
                self._tb.close()
