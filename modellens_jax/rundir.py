"""The run directory's contract: what a training run leaves in ``WORKDIR`` and the one way to
load it back (its data, its checkpoint, its summary), used by evaluate, export, sweeps, ablations
and backtests.

``WORKDIR/config.json`` the exact config; ``corpus/`` the compiled corpus (+ ``embeddings/``);
``checkpoints/<step>/`` Orbax checkpoints with ``meta`` (``checkpoint_meta``); ``metrics.jsonl``
and ``tb/`` the curves; ``train_summary.json`` (``write_summary``) the last step, the best
validation point and the compile count; ``lineage.jsonl`` (``append_lineage``) one line per
incremental update (``modellens_jax.update``); ``cold_start.json`` the cold-start prior fitted
on validation after training (``modellens_jax.cold_start``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from modellens_jax import checkpointing, cold_start, sharding, train_state
from modellens_jax import config as config_lib
from modellens_jax.data import corpus as corpus_lib
from modellens_jax.data import pipeline

SUMMARY = "train_summary.json"
LINEAGE = "lineage.jsonl"
# A corpus an update merged carries this per-record mask: the records its fine-tune trains on
# (the new records' groups and a replayed sample of the others); absent = every training record.
FINETUNE = "rec_finetune"


# --- data ---------------------------------------------------------------------------------------
def load_data(config: ml_collections.ConfigDict, workdir: str | Path, *, verbose: bool = True):
    """The compiled corpus under ``workdir/corpus`` (prepared if absent) and its feature tables
    (frozen description embeddings computed or taken from the cache if absent)."""
    cdir = Path(workdir) / "corpus"
    # Process 0 decides and prepares; every process passes the barrier (a process deciding on
    # its own could see the corpus process 0 just wrote and skip a barrier process 0 waits at).
    if jax.process_index() == 0 and not (cdir / "manifest.json").exists():
        from modellens_jax import prepare

        prepare.prepare(config.data, cdir, verbose=verbose)
    _barrier("prepare")
    corpus = corpus_lib.load_corpus(cdir)
    m_cfg = config.model
    need = m_cfg.use_model_desc or m_cfg.use_dataset_desc
    if need:
        from modellens_jax import embed

        if jax.process_index() == 0 and not (cdir / "embeddings" / "manifest.json").exists():
            embed.embed_corpus(cdir, encoder=config.embed.encoder, dtype=config.embed.dtype,
                               batch_size=config.embed.batch_size,
                               max_length=config.embed.max_length, verbose=verbose)  # fmt: skip
        _barrier("embed")
        model_desc, dataset_desc = embed.load_corpus_embeddings(cdir)
    if not (need and m_cfg.use_model_desc):
        model_desc = np.zeros((len(corpus.model_names), 0), np.float32)
    if not (need and m_cfg.use_dataset_desc):
        dataset_desc = np.zeros((len(corpus.vocab["datasets"]), 0), np.float32)
    tables = pipeline.FeatureTables(corpus, model_desc, dataset_desc)
    if m_cfg.get("use_competence", False):
        tables.attach_competence()
    return corpus, tables


def finetune_records(corpus: corpus_lib.Corpus) -> np.ndarray | None:
    """The training records an update's fine-tune streams (``FINETUNE``), None = all of them."""
    mask = corpus.arrays.get(FINETUNE)
    return None if mask is None else np.asarray(mask, bool)


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# --- what a run writes --------------------------------------------------------------------------
def checkpoint_meta(config: ml_collections.ConfigDict, corpus: corpus_lib.Corpus) -> dict[str, Any]:
    """The metadata every checkpoint of a run carries (resume and restore check the first two)."""
    return {
        "config_hash": config_lib.config_hash(config),
        "corpus_fingerprint": corpus.fingerprint,
        "process_count": jax.process_count(),
        "worker_count": int(config.input.worker_count),
    }


def write_summary(workdir: str | Path, summary: dict[str, Any]) -> None:
    """``train_summary.json``: ``step``, ``best`` (``{step, judge, val}`` or None), ``compiles``."""
    (Path(workdir) / SUMMARY).write_text(json.dumps(summary, indent=1, default=float))


def read_summary(workdir: str | Path) -> dict[str, Any]:
    """The run's ``train_summary.json`` ({} before training finished)."""
    path = Path(workdir) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else {}


def read_lineage(workdir: str | Path) -> list[dict[str, Any]]:
    """The run's updates, oldest first (``lineage.jsonl``; [] for a run never updated)."""
    path = Path(workdir) / LINEAGE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_lineage(workdir: str | Path, entry: dict[str, Any]) -> None:
    """Appends one update's line to ``lineage.jsonl`` (flushed and fsynced)."""
    with (Path(workdir) / LINEAGE).open("a") as f:
        f.write(json.dumps(entry, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --- restoring a run ----------------------------------------------------------------------------
@dataclasses.dataclass
class Restored:
    """A trained run rebuilt from its directory."""

    config: ml_collections.ConfigDict
    corpus: corpus_lib.Corpus
    tables: pipeline.FeatureTables
    graphdef: Any
    state: Any
    step: int
    meta: dict[str, Any]
    mesh: jax.sharding.Mesh
    best: dict[str, Any] | None  # the best validation point (``train_summary.json``)
    cold: cold_start.ColdStart | None = None  # the fitted cold-start prior (``cold_start.json``)


def restore(
    workdir: str | Path,
    *,
    step: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    verbose: bool = False,
) -> Restored:
    """Rebuilds the (model, optimizer) state of a run exactly as ``train`` builds it and restores
    checkpoint ``step`` (default: the best by validation judge, else the newest; an unreadable
    best falls back to the newest intact one). The checkpoint must match the run's config hash
    and corpus fingerprint. ``mesh`` defaults to the run's mesh config over the local devices."""
    workdir = Path(workdir)
    say = print if verbose else (lambda *a, **k: None)
    config = config_lib.load_run_config(workdir)
    for need, what in ((workdir / "corpus" / "manifest.json", "compiled corpus"),
                       (workdir / "checkpoints", "checkpoints directory")):  # fmt: skip
        if not need.exists():
            raise FileNotFoundError(f"{need}: missing (no {what}; is {workdir} a training run?)")
    corpus, tables = load_data(config, workdir, verbose=verbose)
    if mesh is None:
        mesh = sharding.make_mesh(int(config.mesh.data), int(config.mesh.model))
    sizes = train_state.feature_sizes(config, tables)
    graphdef, abstract = train_state.abstract_state(config, sizes, mesh)
    expect = {
        "config_hash": config_lib.config_hash(config),
        "corpus_fingerprint": corpus.fingerprint,
    }
    ckdir = workdir / "checkpoints"
    ckpt = checkpointing.Checkpointer(ckdir, keep_latest=1 << 30, async_save=False)
    try:
        steps = ckpt.steps()
        if not steps:
            raise FileNotFoundError(f"{ckdir}: no checkpoint")
        if step is not None and step not in steps:
            raise FileNotFoundError(f"{ckdir}: no checkpoint at step {step} (have {steps})")
        chosen = step if step is not None else ckpt.best_step()
        kw = {"config_json": config.to_json_best_effort(), "say": say}
        restored = None
        if chosen is not None:
            try:
                restored = ckpt.restore(abstract, expect, step=chosen, **kw)
            except checkpointing.CheckpointCorrupted:
                if step is not None:
                    raise
                say(f"best step {chosen} unreadable; using the newest intact checkpoint")
        if restored is None:
            restored = ckpt.restore(abstract, expect, **kw)
        if restored is None:
            raise FileNotFoundError(f"{ckdir}: no checkpoint")
    finally:
        ckpt.close()
    got, state, _, meta = restored
    best = read_summary(workdir).get("best")
    return Restored(config, corpus, tables, graphdef, state, int(got), meta, mesh, best,
                    cold_start.load(workdir))  # fmt: skip
