"""``python -m modellens_jax.update --workdir=W --records=DIR [--export=B]``: keep a trained
recommender current as new leaderboard records, models and datasets arrive.

The records (either corpus format; only the new or changed records and metadata) are read and
validated exactly as ``prepare`` reads them, then merged into the run's corpus: the run's own
sources (``data.source`` and the records of earlier updates, kept in ``W/records/<n>/``) plus the
new ones are compiled as ``prepare`` compiles them, and the result is re-indexed so that every
model, dataset, task, metric, family, modality, source and group keeps its index and every
learned ID its row; new ones are appended. The new corpus records its parent's fingerprint.

Splits: every record the run already had keeps its split and setting; a new record trains,
except on a dataset or model the run holds out (validation or test), where it joins that
hold-out, so the run's evaluation splits stay clean. ``--cutoff`` (arrival backtests only) moves
the fold's cut-off instead: every record the run has not trained on then has the split
``prepare`` gives it there (a record it trained on stays in training: it cannot be held out).

The latest checkpoint is extended (new rows of the ID tables start at the [UNK] row, new rows of
the family/task/metric tables at zero, their optimizer moments at zero; every existing parameter
and moment is copied bit for bit) and fine-tuned by ``train.train_and_evaluate`` (the same loop,
validation, checkpoint selection, signals and bit-exact resume) for ``update.steps`` on the
training records of the groups with new records plus a replayed share (``updates.replay``) of the
other training groups, on a warm-up + cosine schedule of its own (``updates.*`` of ``--config``;
the rest of the run's config is its own ``W/config.json``).

The next generation is built and trained in ``W/update/``; ``W`` is not touched until it is
complete: then the previous generation moves to ``W/generations/<n>/`` and the new one into
place (a journal makes the swap finish if interrupted), and ``W/lineage.jsonl`` gets a line
(fingerprints, counts, steps, validation before and after). A killed update resumes when the
same command is rerun. ``--export=B`` then writes a fresh bundle (its manifest carries the
lineage).

Records that contradict the run (same task, dataset, model and metric with another value; a
metric direction or a known model's family or size that differ) are refused with one line naming
file, row and field, unless ``--on_conflict=keep`` (the run's value stays) or ``replace`` (the new
value wins; not for directions). Exit status 0 (also when there is nothing new: then nothing is
written), 2 on bad input, 75 when stopped by a signal after saving (rerun to resume).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import pandas as pd

from modellens_jax import cli, cold_start, config_check, jobguard, rundir, train
from modellens_jax import config as config_lib
from modellens_jax.data import corpus as corpus_lib
from modellens_jax.data import ingest, splits
from modellens_jax.data.ingest import LINE, CorpusError

STAGE = "update"  # W/update/: the next generation, built and trained here
GENERATIONS = "generations"  # W/generations/<n>/: generation n as it was before update n + 1
RECORDS = "records"  # W/records/<n>/: the records update n merged (the run's source chain)
# What a generation is made of (the run-directory contract, ``rundir``).
# What a generation is: the fitted cold-start prior belongs to its network (without it in the
# swap an updated run would serve new models without any prior)
RUN_ENTRIES = ("corpus", "checkpoints", "config.json", rundir.SUMMARY, "metrics.jsonl", "tb",
               cold_start.FILE)  # fmt: skip
REQUEST = "UPDATE.json"  # in W/update/: what is being updated (written last when staging)
COMMIT = "COMMIT.json"  # in W/update/: the fine-tune finished; the swap may (re)start
CONFLICTS = ("error", "keep", "replace")
KEY = ["task", "dataset", "model", "metric"]
GROUP = ["dataset", "task", "metric"]
VOCABS = ("models", "datasets", "tasks", "metrics", "families", "modalities", "sources")


@dataclasses.dataclass
class Merged:
    """A merged corpus (not written yet) and what changed."""

    compiled: corpus_lib.Compiled
    counts: dict[str, int]
    identical: bool  # the merge changed nothing (same arrays, vocabularies and texts)


# --- reading and checking the records ---------------------------------------------------------
def _read(source: str, data_cfg, fmt: str = "auto") -> ingest.RawCorpus:
    """A corpus directory read and validated exactly as ``prepare`` reads ``data.source``."""
    return ingest.read_corpus(
        str(source), fmt=fmt, direction_overrides=dict(data_cfg.direction_overrides),
        bad_rows=str(data_cfg.get("bad_rows", "error")), report={},
    )  # fmt: skip


def _concat(parts: list[ingest.RawCorpus]) -> ingest.RawCorpus:
    """Tables of several corpora as one (rows renumbered; earlier parts first)."""

    def cat(frames):
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else parts[0].models.iloc[:0]

    return ingest.RawCorpus(
        records=pd.concat([p.records for p in parts], ignore_index=True),
        models=cat([p.models for p in parts]),
        datasets=cat([p.datasets for p in parts]),
        origin={"records": ", ".join(p.origin["records"] for p in parts)},
        warnings=[w for p in parts for w in p.warnings],
    )


def _where(raw: ingest.RawCorpus, table: str, label, field: str) -> str:
    df = getattr(raw, table)
    path = raw.origin.get(table) or raw.origin["records"]
    line = f" (line {int(df.at[label, LINE])})" if LINE in df.columns else ""
    return f"{path} row {int(label) + 1}{line}, field '{field}'"


_HINT = "(--on_conflict=keep keeps the run's value, --on_conflict=replace takes the new one)"


def resolve_conflicts(old: ingest.RawCorpus, new: ingest.RawCorpus, on_conflict: str):
    """(old, new, counts) with the contradictions between them resolved: same key with another
    value, another metric direction, a known model's other family or size. ``error`` raises a
    CorpusError naming the new file's row and field."""
    if on_conflict not in CONFLICTS:
        raise cli.UsageError(f"--on_conflict={on_conflict!r}: expected {', '.join(CONFLICTS)}")
    counts = {"conflicting_records": 0, "conflicting_models": 0, "confirmed_records": 0}
    orec, nrec = old.records, new.records
    # metric directions per evaluation group
    odir = orec.groupby(GROUP, sort=False)["direction"].first()
    ndir = nrec.set_index(GROUP).index.map(odir.to_dict().get)
    flip = np.array([d is not None and d == d and int(d) != int(x)
                     for d, x in zip(ndir, nrec["direction"])], bool)  # fmt: skip
    if flip.any():
        label = nrec.index[np.flatnonzero(flip)[0]]
        r = nrec.loc[label]
        msg = (f"{_where(new, 'records', label, 'higher_is_better')}: direction "
               f"{'higher' if r['direction'] > 0 else 'lower'} is better contradicts the run's "
               f"corpus for (dataset {r['dataset']!r}, task {r['task']!r}, metric "
               f"{r['metric']!r})")  # fmt: skip
        if on_conflict != "keep":
            raise CorpusError(msg + " (--on_conflict=keep drops these rows)",
                              path=new.origin["records"], row=int(label) + 1,
                              field="higher_is_better")  # fmt: skip
        counts["conflicting_records"] += int(flip.sum())
        nrec = nrec[~flip]
    # values: the run's value of a key is the mean of its duplicates (as compile merges them)
    oval = orec.groupby(KEY, sort=False)["value"].mean()
    nkey = pd.MultiIndex.from_frame(nrec[KEY])
    have = nkey.isin(oval.index)
    prev = np.full(len(nrec), np.nan)
    prev[have] = oval.reindex(nkey[have]).to_numpy()
    new_v = nrec["value"].to_numpy(np.float64)
    clash = have & ~np.isclose(new_v, prev, rtol=1e-6, atol=0.0)
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        label = nrec.index[i]
        r = nrec.loc[label]
        msg = (f"{_where(new, 'records', label, 'value')}: {new_v[i]:g} contradicts the run's "
               f"corpus, which has {prev[i]:g} for (task {r['task']!r}, dataset {r['dataset']!r}, "
               f"model {r['model']!r}, metric {r['metric']!r}) {_HINT}")  # fmt: skip
        if on_conflict == "error":
            raise CorpusError(msg, path=new.origin["records"], row=int(label) + 1, field="value")
        counts["conflicting_records"] += int(clash.sum())
        if on_conflict == "replace":  # the run's records of those keys go
            gone = pd.MultiIndex.from_frame(nrec[KEY][clash])
            orec = orec[~pd.MultiIndex.from_frame(orec[KEY]).isin(gone)]
    # a record the run has with the same value confirms it: not merged again (re-averaging
    # equal duplicates can move a value by an ulp); keep also drops the contradicting ones
    same = have & ~clash
    counts["confirmed_records"] = int(same.sum())
    nrec = nrec[~(same | (clash if on_conflict == "keep" else False))]
    # model metadata of models the run knows
    omod, nmod = old.models, new.models
    if len(nmod) and len(omod):
        first = corpus_lib._first_nonempty_by(omod, "model", ["family", "params"])
        known = nmod["model"].isin(first.index).to_numpy()
        ofam = nmod["model"].map(first["family"]).fillna("").astype(str).str.lower().to_numpy()
        opar = pd.to_numeric(nmod["model"].map(first["params"]), errors="coerce").to_numpy()
        nfam = nmod["family"].fillna("").astype(str).str.lower().to_numpy()
        npar = pd.to_numeric(nmod["params"], errors="coerce").to_numpy(np.float64)
        fam_bad = known & (nfam != "") & (ofam != "") & (nfam != ofam)
        par_bad = known & np.isfinite(npar) & np.isfinite(opar) & ~np.isclose(npar, opar, rtol=1e-6)
        bad = fam_bad | par_bad
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            label, field = nmod.index[i], "family" if fam_bad[i] else "params"
            was, now = (ofam[i], nfam[i]) if fam_bad[i] else (f"{opar[i]:g}", f"{npar[i]:g}")
            msg = (f"{_where(new, 'models', label, field)}: {now!r} contradicts the run's "
                   f"{was!r} for model {nmod.at[label, 'model']!r} {_HINT}")  # fmt: skip
            if on_conflict == "error":
                raise CorpusError(msg, path=new.origin.get("models"), row=int(label) + 1,
                                  field=field)  # fmt: skip
            counts["conflicting_models"] += int(bad.sum())
            if on_conflict == "keep":
                nmod = nmod[~bad]
    new = dataclasses.replace(new, records=nrec, models=nmod)
    old = dataclasses.replace(old, records=orec)
    return old, new, counts


# --- merging into the run's corpus --------------------------------------------------------------
def _extend(old: list[str], merged: list[str]) -> tuple[list[str], np.ndarray]:
    """(old names then the merged names they lack, position of each merged name there)."""
    at = {v: i for i, v in enumerate(old)}
    final = list(old) + [v for v in merged if v not in at]
    at = {v: i for i, v in enumerate(final)}
    return final, np.array([at[v] for v in merged], np.int64)


def merge(parent: corpus_lib.Corpus, raw: ingest.RawCorpus, data_cfg, *, cutoff_moved: bool,
          seed: int, replay: float) -> Merged:  # fmt: skip
    """Compiles ``raw`` (the run's sources and the new records) as ``prepare`` does and re-indexes
    it onto ``parent``: parent entities, groups and learned IDs keep their indices, new ones are
    appended; splits as the module docstring says; the fine-tune's records (``rundir.FINETUNE``)
    are the training records of changed groups plus a ``replay`` share of the others."""
    m = corpus_lib.compile_corpus(raw, data_cfg)
    pv = parent.vocab
    vocab, remap = {}, {}
    for k in VOCABS:
        vocab[k], remap[k] = _extend(pv[k], m.vocab[k])
    for k, what in (("models", "model"), ("datasets", "dataset")):
        lost = sorted(set(pv[k]) - set(m.vocab[k]))
        if lost:
            raise CorpusError(
                f"the run's sources ({raw.origin['records']}) no longer produce {len(lost)} "
                f"{what}(s) of its corpus, e.g. {lost[0]!r}: was data.source changed?",
                path=raw.origin["records"].split(", ")[0],
            )  # fmt: skip
    a = m.arrays
    n_models, n_datasets = len(vocab["models"]), len(vocab["datasets"])
    out: dict[str, np.ndarray] = {}
    mi, di = remap["models"], remap["datasets"]
    for name in ("model_params", "model_size_bucket", "model_release_day", "model_name_tokens",
                 "model_name_mask", "model_family"):  # fmt: skip
        col = np.zeros((n_models, *a[name].shape[1:]), a[name].dtype)
        col[mi] = a[name] if name != "model_family" else remap["families"][a[name]]
        out[name] = col
    col = np.zeros(n_datasets, a["dataset_modality"].dtype)
    col[di] = remap["modalities"][a["dataset_modality"]]
    out["dataset_modality"] = col
    texts = {"models": [""] * n_models, "datasets": [""] * n_datasets}
    for k, idx in (("models", mi), ("datasets", di)):
        for i, t in zip(idx, m.texts[k]):
            texts[k][int(i)] = t
    # groups: the parent's in order, then the new ones
    pg = np.stack([np.asarray(parent[f"group_{f}"]) for f in ("dataset", "task", "metric")], 1)
    mg = np.stack([remap["datasets"][a["group_dataset"]], remap["tasks"][a["group_task"]],
                   remap["metrics"][a["group_metric"]]], 1)  # fmt: skip
    pkeys = {tuple(r): i for i, r in enumerate(pg.tolist())}
    gmap = np.empty(len(mg), np.int64)
    nxt = len(pg)
    for i, r in enumerate(mg.tolist()):
        j = pkeys.get(tuple(r))
        if j is None:
            j, nxt = nxt, nxt + 1
        gmap[i] = j
    lost_groups = len(pg) - int(np.sum(gmap < len(pg)))
    if lost_groups:
        raise CorpusError(f"the run's sources no longer produce {lost_groups} of its groups: was "
                          "data.source changed?", path=raw.origin["records"].split(", ")[0])  # fmt: skip
    groups = np.zeros((nxt, 3), np.int64)
    groups[gmap] = mg
    groups[: len(pg)] = pg
    # records, sorted as compile sorts them: (group, value desc, model)
    rg, rm = gmap[a["rec_group"]], mi[a["rec_model"]]
    value = np.asarray(m.values, np.float64)
    order = np.lexsort((rm, -value, rg))
    rg, rm, value = rg[order], rm[order], value[order]
    rec = {k: np.asarray(a[k])[order] for k in ("rec_raw_value", "rec_split", "rec_setting")}
    rec["rec_source"] = remap["sources"][np.asarray(a["rec_source"])[order]].astype(np.int16)
    # the parent's record of each merged record (-1: new)
    n_parent_models = len(pv["models"])
    pkey = np.asarray(parent["rec_group"], np.int64) * (n_models + 1) + np.asarray(
        parent["rec_model"]
    )
    mkey = rg * (n_models + 1) + rm
    porder = np.argsort(pkey, kind="stable")
    pos = np.searchsorted(pkey[porder], mkey)
    pos = np.minimum(pos, len(pkey) - 1)
    prev = np.where(pkey[porder][pos] == mkey, porder[pos], -1)
    is_new = prev < 0
    split, setting = rec["rec_split"].copy(), rec["rec_setting"].copy()
    psplit, psetting = np.asarray(parent["rec_split"]), np.asarray(parent["rec_setting"])
    if cutoff_moved:  # a record the run trained on cannot be held out again
        trained = ~is_new & (psplit[np.maximum(prev, 0)] == splits.TRAIN)
        split[trained], setting[trained] = splits.TRAIN, psetting[prev[trained]]
    else:
        split[~is_new], setting[~is_new] = psplit[prev[~is_new]], psetting[prev[~is_new]]

        # held-out entities of the parent: records, none in training
        def held(ids, n):
            has = np.zeros(n, bool)
            has[ids] = True
            tr = np.zeros(n, bool)
            tr[ids[psplit == splits.TRAIN]] = True
            first = np.full(n, splits.TRAIN, np.int8)
            first[ids[::-1]] = psplit[::-1]  # any of them: a held-out entity is in one split
            return has & ~tr, first

        pds = np.asarray(parent["group_dataset"])[np.asarray(parent["rec_group"])]
        d_held, d_split = held(pds, len(pv["datasets"]))
        m_held, m_split = held(np.asarray(parent["rec_model"]), n_parent_models)
        rds = groups[rg, 0]
        new_idx = np.flatnonzero(is_new)
        for i in new_idx:
            d, mo = int(rds[i]), int(rm[i])
            if d < len(d_held) and d_held[d]:
                split[i] = d_split[d]
                setting[i] = splits.UNSEEN_DATASET
            elif mo < n_parent_models and m_held[mo]:
                split[i] = m_split[mo]
                setting[i] = splits.UNSEEN_MODEL
            else:
                split[i], setting[i] = splits.TRAIN, splits.COMPLETION
    # learned IDs: the parent's are kept; entities training for the first time get the next rows
    train_rec = split == splits.TRAIN

    def ids(parent_ids: np.ndarray, used: np.ndarray, n: int) -> np.ndarray:
        out_ids = np.zeros(n, np.int32)
        out_ids[: len(parent_ids)] = parent_ids
        seen = np.zeros(n, bool)
        seen[used] = True
        fresh = seen & (out_ids == 0)
        out_ids[fresh] = int(parent_ids.max(initial=0)) + np.arange(1, int(fresh.sum()) + 1)
        return out_ids

    out["model_id"] = ids(np.asarray(parent["model_id"]), rm[train_rec], n_models)
    out["dataset_id"] = ids(np.asarray(parent["dataset_id"]), groups[rg[train_rec], 0], n_datasets)
    if not cutoff_moved and protocol_is_backtest(data_cfg):
        both = is_new & (setting == splits.UNSEEN_DATASET) & (out["model_id"][rm] == 0)
        setting[both] = splits.UNSEEN_BOTH
    z = corpus_lib.zscores(rg, value, split, setting)
    arrays = {
        "rec_group": rg.astype(np.int32), "rec_model": rm.astype(np.int32),
        "rec_value": value.astype(np.float32), "rec_raw_value": rec["rec_raw_value"],
        "rec_z": z.astype(np.float32), "rec_split": split, "rec_setting": setting,
        "rec_source": rec["rec_source"],
        "group_offsets": np.r_[0, np.cumsum(np.bincount(rg, minlength=len(groups)))].astype(np.int64),
        "group_dataset": groups[:, 0].astype(np.int32), "group_task": groups[:, 1].astype(np.int32),
        "group_metric": groups[:, 2].astype(np.int32), **out,
    }  # fmt: skip
    for k, v in a.items():
        if k not in arrays:
            raise AssertionError(f"merge does not know how to re-index corpus array {k!r}")
        arrays[k] = arrays[k].astype(v.dtype)
    identical = _same(parent, arrays, vocab, texts)
    # what changed: new records, changed values, records that now train
    p_raw = np.asarray(parent["rec_raw_value"])
    changed = ~is_new & (rec["rec_raw_value"] != p_raw[np.maximum(prev, 0)])
    p_split = np.asarray(parent["rec_split"])
    now_train = ~is_new & train_rec & (p_split[np.maximum(prev, 0)] != splits.TRAIN)
    touched = np.zeros(len(groups), bool)
    touched[rg[is_new | changed | now_train]] = True
    touched[len(pg) :] = True
    with_train = np.zeros(len(groups), bool)
    with_train[rg[train_rec]] = True
    rest = np.flatnonzero(with_train & ~touched)
    rng = np.random.default_rng(np.random.SeedSequence([seed, len(rest), int(is_new.sum())]))
    replayed = rng.choice(rest, size=round(replay * len(rest)), replace=False)
    chosen = touched.copy()
    chosen[replayed] = True
    if not identical:
        arrays[rundir.FINETUNE] = (chosen[rg] & train_rec).astype(np.int8)
    counts = {
        "records": len(rg), "new_records": int(is_new.sum()), "changed_records": int(changed.sum()),
        "records_now_training": int(now_train.sum()),
        "new_models": n_models - len(pv["models"]), "new_datasets": n_datasets - len(pv["datasets"]),
        **{f"new_{k}": len(vocab[k]) - len(pv[k]) for k in ("tasks", "metrics", "families")},
        "new_groups": len(groups) - len(pg),
        "new_model_ids": int(out["model_id"].max()) - int(np.max(parent["model_id"])),
        "new_dataset_ids": int(out["dataset_id"].max()) - int(np.max(parent["dataset_id"])),
        "groups_touched": int(touched.sum()), "groups_replayed": len(replayed),
        "finetune_records": int((chosen[rg] & train_rec).sum()),
    }  # fmt: skip
    report = {**m.report, **corpus_lib.summary(arrays, vocab)}
    report["update"] = {"parent_fingerprint": parent.fingerprint, **counts}
    compiled = corpus_lib.Compiled(arrays, vocab, texts, report, values=value)
    return Merged(compiled, counts, identical)


def protocol_is_backtest(data_cfg) -> bool:
    return str(data_cfg.split.get("protocol", "random")) == "backtest"


def _same(parent: corpus_lib.Corpus, arrays, vocab, texts) -> bool:
    """Whether the merge reproduced the parent (its fine-tune mask aside)."""
    pa = {k: v for k, v in parent.arrays.items() if k != rundir.FINETUNE}
    if set(pa) != set(arrays) or parent.vocab != vocab or parent.texts != texts:
        return False
    return all(
        pa[k].dtype == arrays[k].dtype
        and np.array_equal(np.asarray(pa[k]), arrays[k], equal_nan=arrays[k].dtype.kind == "f")
        for k in arrays
    )


# --- extending the state ------------------------------------------------------------------------
ID_ROWS = ("model_id_embed", "dataset_id_embed")  # new rows start at the [UNK] row


def extend_state(parent_state: Any, fresh_state: Any) -> Any:
    """``parent_state`` with every leaf grown to ``fresh_state``'s shape along its first axis:
    existing entries copied bit for bit; new rows of the model/dataset ID tables copy their
    [UNK] row, every other new row (other tables, optimizer moments) is zero. Host arrays."""
    p_leaves = jax.tree.leaves(parent_state)
    f_paths, treedef = jax.tree.flatten_with_path(fresh_state)
    if len(p_leaves) != len(f_paths):
        raise ValueError("the parent checkpoint's state has another structure than this config's")
    out = []
    for (path, fresh), old in zip(f_paths, p_leaves):
        old = np.asarray(old)
        name = jax.tree_util.keystr(path)
        shape = tuple(fresh.shape)
        if old.shape == shape:
            out.append(old)
            continue
        if old.ndim == 0 or old.shape[1:] != shape[1:] or old.shape[0] > shape[0]:
            raise ValueError(f"state leaf {name}: parent shape {old.shape} cannot grow to {shape}")
        grow = np.zeros((shape[0] - old.shape[0], *shape[1:]), old.dtype)
        is_param = name.startswith("[0]") and name.endswith("['embedding'].value")
        if is_param and any(f"['{t}']" in name for t in ID_ROWS):
            grow[:] = old[:1]
        out.append(np.concatenate([old, grow], 0))
    return jax.tree.unflatten(treedef, out)


# --- the command as a function ------------------------------------------------------------------
def _records_hash(directory: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(directory)).encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


def _sources(workdir: Path, config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
    """(directory, format) of the run's record sources, oldest first."""
    out = [(str(config.data.source), str(config.data.format))]
    rdir = workdir / RECORDS
    if rdir.is_dir():
        out += [(str(p), "auto") for p in sorted(rdir.iterdir(), key=lambda p: int(p.name))]
    return out


def update_config(parent: ml_collections.ConfigDict, settings: ml_collections.ConfigDict, *,
                  step_offset: int, cutoff: float | None) -> ml_collections.ConfigDict:  # fmt: skip
    """The fine-tune's run config: the parent's, with the ``updates`` settings as its schedule,
    steps and validation interval, and its optimizer schedule starting at ``step_offset``."""
    c = ml_collections.ConfigDict(parent.to_dict())
    u = settings
    c.updates = ml_collections.ConfigDict(u.to_dict())
    c.train.steps = int(u.steps)
    c.train.eval_every = c.train.checkpoint_every = int(u.eval_every)
    c.train.eval_at_start = True  # the extended parent's judge: the lineage's "before"
    c.train.early_stop_patience = 0
    c.optim.learning_rate = float(u.learning_rate)
    c.optim.warmup_steps = int(u.warmup_steps)
    c.optim.step_offset = int(step_offset)
    if cutoff is not None:
        c.data.split.cutoff = float(cutoff)
    return c


def run(workdir: str | Path, records: str | Path, settings: ml_collections.ConfigDict, *,
        on_conflict: str = "error", export: str | Path | None = None,
        cutoff: float | None = None, verbose: bool = True,
        stop_after: int | None = None) -> dict[str, Any] | None:  # fmt: skip
    """The ``update`` command as a function: the lineage entry of the update, or None when the
    records change nothing. ``stop_after`` interrupts the fine-tune after that many steps
    (tests). See the module docstring."""
    workdir = Path(workdir)
    say = print if verbose else (lambda *a, **k: None)
    config_check.validate_update(ml_collections.ConfigDict({"updates": settings.to_dict()}))
    if not (workdir / "config.json").is_file():
        raise FileNotFoundError(f"{workdir / 'config.json'}: missing; is {workdir} a training run?")
    with jobguard.WorkdirLock(workdir, "update", say=lambda m: print(m, file=sys.stderr)):
        stage = workdir / STAGE
        if (stage / COMMIT).is_file():  # a finished fine-tune whose swap was interrupted
            entry = _commit(workdir)
            say(f"finished the interrupted swap of generation {entry['generation']}")
        else:
            entry = _update(workdir, Path(records), settings, on_conflict, cutoff, say, stop_after)
            if entry is None:
                return None
        if export is not None:
            from modellens_jax import export as export_lib

            export_lib.export(workdir, export)
            say(f"wrote bundle {export}")
        return entry


def _update(workdir: Path, records: Path, settings, on_conflict: str, cutoff: float | None,
            say, stop_after: int | None) -> dict[str, Any] | None:  # fmt: skip
    t0 = time.perf_counter()
    stage = workdir / STAGE
    parent_cfg = config_lib.load_run_config(workdir)
    parent = corpus_lib.load_corpus(workdir / "corpus")
    generation = len(rundir.read_lineage(workdir)) + 1
    records = records.absolute()
    if not records.is_dir():
        raise FileNotFoundError(f"--records={records}: not a directory")
    request = {"parent_fingerprint": parent.fingerprint, "records": str(records),
               "records_sha256": _records_hash(records), "on_conflict": on_conflict,
               "cutoff": cutoff, "generation": generation, "updates": settings.to_dict()}  # fmt: skip
    if stage.exists():
        held = json.loads((stage / REQUEST).read_text()) if (stage / REQUEST).is_file() else None
        if held is None:  # staging died before it was complete: start it again
            shutil.rmtree(stage)
        elif held != request:
            diff = sorted(k for k in request if held.get(k) != request[k])
            raise cli.UsageError(
                f"{stage}: holds an unfinished update that differs in {', '.join(diff)}; rerun "
                f"that update ({held.get('records')}) or remove {stage}"
            )
    if not stage.exists():
        staged = _stage(workdir, parent_cfg, parent, records, settings, on_conflict, cutoff,
                        request, say)  # fmt: skip
        if staged is None:
            return None
    else:
        say(f"resuming the update in {stage}")
    config = config_lib.load_run_config(stage)
    have_ckpt = (stage / "checkpoints").is_dir() and any(
        p.name.isdigit() for p in (stage / "checkpoints").iterdir()
    )
    hook = None if have_ckpt else _initial_state(workdir)
    res = train.train_and_evaluate(config, stage, verbose=say is print, stop_after=stop_after,
                                   initial_state=hook)  # fmt: skip
    if stop_after is not None and res.step < int(config.train.steps):
        raise jobguard.Interrupted(f"stopped after step {res.step} (stop_after)", res.step, "test")
    merged = corpus_lib.load_corpus(stage / "corpus")
    before = _judge_at_start(stage)
    entry = {
        "generation": generation,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parent_fingerprint": parent.fingerprint, "fingerprint": merged.fingerprint,
        "records": str(records), "records_sha256": request["records_sha256"],
        "on_conflict": on_conflict, "cutoff": cutoff,
        "counts": merged.manifest["report"]["update"],
        "steps": res.step, "step_offset": int(config.optim.step_offset),
        "judge_metric": str(config.train.judge), "judge_before": before,
        "best": None if res.best is None else {"step": res.best["step"],
                                               "judge": res.best["judge"]},
        "wall_s": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    (stage / COMMIT).write_text(json.dumps(entry, default=float))
    _commit(workdir)
    say(f"update {generation}: {entry['counts']['new_records']} new records, "
        f"{entry['counts']['new_models']} new models, {entry['counts']['new_datasets']} new "
        f"datasets; {res.step} fine-tune steps; {config.train.judge} {before} -> "
        f"{entry['best'] and entry['best']['judge']} ({entry['wall_s']:.0f}s)")  # fmt: skip
    return entry


def _judge_at_start(run_dir: Path) -> float | None:
    """The validation judge the fine-tune logged before its first step (the extended parent's),
    from ``metrics.jsonl`` (a resumed fine-tune's history starts later)."""
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        row = json.loads(line)
        if row.get("step") == 0 and "val/judge" in row:
            return row["val/judge"]
    return None


def _stage(workdir: Path, parent_cfg, parent, records: Path, settings, on_conflict, cutoff,
           request, say) -> bool | None:  # fmt: skip
    """Builds ``W/update/`` (merged corpus, records copy, fine-tune config; the request last), or
    returns None when the records change nothing."""
    stage = workdir / STAGE
    data_cfg = ml_collections.ConfigDict(parent_cfg.data.to_dict())
    cutoff_moved = cutoff is not None and float(cutoff) != float(data_cfg.split.cutoff)
    if cutoff is not None:
        if not protocol_is_backtest(data_cfg):
            raise cli.UsageError("--cutoff: only for runs of an arrival backtest fold "
                                 "(data.split.protocol='backtest')")  # fmt: skip
        splits.check_backtest(float(cutoff), float(data_cfg.split.get("horizon", 1.0)))
        data_cfg.split.cutoff = float(cutoff)
    say(f"reading {records}")
    new = _read(str(records), data_cfg)
    old = _concat([_read(s, data_cfg, fmt) for s, fmt in _sources(workdir, parent_cfg)])
    old, new, conflicts = resolve_conflicts(old, new, on_conflict)
    merged = merge(parent, _concat([old, new]), data_cfg, cutoff_moved=cutoff_moved,
                   seed=int(settings.seed) + request["generation"],
                   replay=float(settings.replay))  # fmt: skip
    merged.compiled.report["update"].update(conflicts)
    if merged.identical:
        say(f"nothing to update: {records} adds or changes no record of {workdir} "
            f"(corpus {parent.fingerprint[:16]})")  # fmt: skip
        return None
    c = merged.counts
    say(f"merged: {c['new_records']} new records ({c['changed_records']} changed), "
        f"{c['new_models']} new models, {c['new_datasets']} new datasets, {c['new_groups']} new "
        f"groups; fine-tune on {c['finetune_records']} records ({c['groups_touched']} groups "
        f"touched, {c['groups_replayed']} replayed)")  # fmt: skip
    tmp = workdir / f".{STAGE}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    corpus_lib.write_corpus(merged.compiled, tmp / "corpus",
                            config=json.loads(data_cfg.to_json_best_effort()))  # fmt: skip
    shutil.copytree(records, tmp / RECORDS)
    parent_step = _parent_opt_step(workdir, parent_cfg)
    cfg = update_config(parent_cfg, settings, step_offset=parent_step, cutoff=cutoff)
    config_check.validate(cfg, process_count=jax.process_count())
    (tmp / "config.json").write_text(cfg.to_json_best_effort(indent=1))
    (tmp / REQUEST).write_text(json.dumps(request))
    os.replace(tmp, stage)
    return True


def _latest_step(workdir: Path) -> int:
    from modellens_jax import checkpointing

    with checkpointing.Checkpointer(workdir / "checkpoints", async_save=False) as ckpt:
        steps = ckpt.steps()
    if not steps:
        raise FileNotFoundError(f"{workdir / 'checkpoints'}: no checkpoint to update")
    return int(steps[-1])


def _parent_opt_step(workdir: Path, parent_cfg: ml_collections.ConfigDict) -> int:
    """The optimizer's step count in the run's latest checkpoint (the fine-tune's offset): one
    per loop step, after the offset the run itself started from (an updated run)."""
    return int(parent_cfg.optim.get("step_offset", 0)) + _latest_step(workdir)


def _initial_state(workdir: Path):
    """The trainer's ``initial_state``: the run's latest checkpoint with its tables extended."""

    def init(graphdef, fresh, state_sh):
        del graphdef
        r = rundir.restore(workdir, step=_latest_step(workdir))
        step = int(np.asarray(jax.device_get(jax.tree.leaves(r.state[1]["step"])[0])))
        want = _parent_opt_step(workdir, r.config)
        if step != want:
            raise ValueError(
                f"{workdir}: the latest checkpoint's optimizer is at step {step}, "
                f"not {want} (its loop step plus optim.step_offset)"
            )
        grown = extend_state(jax.device_get(r.state), jax.device_get(fresh))
        return jax.device_put(grown, state_sh)

    return init


def _commit(workdir: Path) -> dict[str, Any]:
    """Swaps the finished generation in ``W/update/`` into ``W`` (idempotent: an interrupted
    swap is finished by the next call): the current generation moves to ``W/generations/<n>``,
    the new one into place, its records to ``W/records/<n+1>``, and the lineage gets its line."""
    stage = workdir / STAGE
    entry = json.loads((stage / COMMIT).read_text())
    n = int(entry["generation"])
    old = workdir / GENERATIONS / str(n - 1)
    old.mkdir(parents=True, exist_ok=True)
    for name in RUN_ENTRIES:  # 1. the current generation aside
        src, dst = workdir / name, old / name
        if (src.exists() or src.is_symlink()) and (stage / name).exists() and not dst.exists():
            os.replace(src, dst)
    for name in RUN_ENTRIES:  # 2. the new one in
        src = stage / name
        if src.exists() and not (workdir / name).exists():
            os.replace(src, workdir / name)
    (workdir / RECORDS).mkdir(exist_ok=True)
    if (stage / RECORDS).exists() and not (workdir / RECORDS / str(n)).exists():
        os.replace(stage / RECORDS, workdir / RECORDS / str(n))
    if not any(e.get("generation") == n for e in rundir.read_lineage(workdir)):
        rundir.append_lineage(workdir, entry)
    shutil.rmtree(stage)
    return entry


# --- command ------------------------------------------------------------------------------------
def _define(fv) -> None:
    from absl import flags

    cli.config_flag(fv)
    flags.DEFINE_string("workdir", None, "The training run to update.", required=True,
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_string("records", None, "Directory of the new or changed records (leaderboard or "
                        "ModelLens format).", required=True, flag_values=fv)  # fmt: skip
    flags.DEFINE_string("export", None, "Write a fresh bundle here after the update.",
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_enum("on_conflict", "error", list(CONFLICTS), "A record contradicting the run: "
                      "error (refuse), keep (the run's value) or replace (the new value).",
                      flag_values=fv)  # fmt: skip
    flags.DEFINE_float("cutoff", None, "Arrival backtest runs only: move the fold's cut-off "
                       "(data.split.cutoff) to this share.", flag_values=fv)  # fmt: skip


def _run(fv) -> None:
    run(fv.workdir, fv.records, fv.config.updates, on_conflict=fv.on_conflict, export=fv.export,
        cutoff=fv.cutoff)  # fmt: skip


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
