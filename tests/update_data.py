"""Records for the update tests: four small sources of the shipped corpus (8.8k records) with
some of it held back (the run's source), and the held-back part plus a few invented entities
(the update): two real models and a real dataset the run has not seen, an invented model of an
invented family, an invented metric (a new group) and task."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from modellens_jax.data import ingest

SHIPPED = ingest.shipped_corpus_dir("leaderboard-v1")
HELD_MODELS = ("Command R (08-24)", "Codestral 25.01")  # real models the run has not seen
HELD_DATASET = "AlpacaEval [text_davinci_003]"  # a real dataset the run has not seen
NEW_MODEL = "zz-newfam-1b"  # an invented model of an invented family
NEW_FAMILY = "zzfam"
NEW_METRIC = "zz_metric"  # an invented metric on a known dataset (a new group)
NEW_TASK = "ZZ Task"


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(SHIPPED / f"{name}.csv.gz", dtype=str, keep_default_na=False)


SOURCES = ("open_llm_leaderboard_v1", "swallow_leaderboard", "alpaca_eval", "aider")
BASE_MODEL = "gpt-4o-2024-08-06"  # the invented model's records are this one's, a little better


def write_sources(root: Path) -> tuple[Path, Path]:
    """(the run's source directory, the update's records directory) under ``root``."""
    rec = _read("records")
    rec = rec[rec["source"].isin(SOURCES)]
    held = rec["model"].isin(HELD_MODELS) | (rec["dataset"] == HELD_DATASET)
    old, new = root / "old", root / "new"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    rec[~held].to_csv(old / "records.csv", index=False)
    for name in ("models", "datasets"):
        shutil.copy(SHIPPED / f"{name}.csv.gz", old / f"{name}.csv.gz")
    back = rec[held].copy()
    back.loc[back["dataset"] == HELD_DATASET, "task"] = NEW_TASK
    base = rec[rec["model"] == BASE_MODEL].head(12).copy()
    base["model"] = NEW_MODEL
    base["value"] = (base["value"].astype(float) * 1.01).map(lambda v: f"{v:.6g}")
    # the invented metric: three known models on a known dataset
    first = rec[rec["dataset"] == "ARC-Challenge"].head(3).copy()
    first["metric"], first["higher_is_better"] = NEW_METRIC, "1"
    pd.concat([back, base, first]).to_csv(new / "records.csv", index=False)
    models = pd.DataFrame([{"model": NEW_MODEL, "family": NEW_FAMILY, "params": "1.0",
                            "model_desp": "an invented model", "release_date": "2025-06-01",
                            "source": "invented"}])  # fmt: skip
    models.to_csv(new / "models.csv", index=False)
    return old, new


def write_records(path: Path, records: pd.DataFrame) -> Path:
    """A records-only directory (leaderboard format) holding ``records``."""
    path.mkdir(parents=True)
    records.to_csv(path / "records.csv", index=False)
    return path
