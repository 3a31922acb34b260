"""The compiled corpus: cleaning, vocabularies, z-scores and splits, written atomically.

On disk (one directory)::

  manifest.json   format version, counts, cleaning report, split config, content fingerprint
  vocab.json      models, datasets, tasks, metrics, families, modalities, sources (index = id)
  texts.json      the text to embed for every model and dataset (see ``model_text``)
  arrays/*.npy    records, groups, models, datasets (memory-mappable)

Records are sorted by (group, value desc, model) so each group is one contiguous slice
(``group_offsets``). Every vocabulary reserves index 0 for ``[UNK]``; ``model_id`` /
``dataset_id`` are the learned-ID rows, non-zero only for entities with a training record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modellens_jax import fsutil
from modellens_jax.data import features, schema, splits
from modellens_jax.data.features import dataset_text, model_text
from modellens_jax.data.ingest import (
    LINE,
    CorpusError,
    RawCorpus,
    check_direction_overrides,
    read_corpus,
)

FORMAT_VERSION = 1
_EPOCH = features.EPOCH


@dataclasses.dataclass
class Compiled:
    arrays: dict[str, np.ndarray]
    vocab: dict[str, list[str]]
    texts: dict[str, list[str]]
    report: dict[str, Any]
    # the records' oriented values in float64 (the sort key; not written): an update re-sorts
    # merged records by the same key
    values: np.ndarray | None = None


def _vocab(values) -> list[str]:
    return [schema.UNK, *sorted({v for v in values if v != schema.UNK})]


def _first_nonempty_by(df: pd.DataFrame, by, columns: list[str]) -> pd.DataFrame:
    """Per group of ``by``: the first non-empty ("" and NaN/NaT are empty) value of each column,
    in row order; "" where a group has none (vectorised: GroupBy.first skips missing values)."""
    keys = [by] if isinstance(by, str) else list(by)
    masked = df[keys + columns].copy()
    for c in columns:
        if masked[c].dtype == object or pd.api.types.is_string_dtype(masked[c]):
            masked[c] = masked[c].mask(masked[c] == "")
    return masked.groupby(keys, sort=False)[columns].first()


def validate_data_config(data_cfg: Mapping[str, Any]) -> None:
    """Config errors (ValueError naming the key) before any file is read."""

    def bad(key: str, value: Any, why: str) -> ValueError:
        return ValueError(f"config data.{key}={value!r}: {why}")

    fmt = data_cfg.get("format", "auto")
    if fmt not in ("auto", "leaderboard", "modellens"):
        raise bad("format", fmt, "expected auto, leaderboard or modellens")
    bad_rows = data_cfg.get("bad_rows", "error")
    if bad_rows not in ("error", "skip"):
        raise bad("bad_rows", bad_rows, "expected error or skip")
    for key, lo in (("min_group_models", 2), ("name_buckets", 1), ("max_name_tokens", 1)):
        v = data_cfg[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise bad(key, v, f"must be an integer >= {lo}")
    edges = np.asarray(tuple(data_cfg["size_edges"]), np.float64)
    if edges.ndim != 1 or not len(edges) or not np.all(np.isfinite(edges)) or edges[0] <= 0:
        raise bad("size_edges", edges.tolist(), "must be positive, finite numbers of billions")
    if np.any(np.diff(edges) <= 0):
        raise bad("size_edges", edges.tolist(), "must be strictly increasing")
    split = dict(data_cfg["split"])
    protocol = split.get("protocol", "random")
    if protocol not in splits.PROTOCOLS:
        raise bad("split.protocol", protocol, f"expected one of {', '.join(splits.PROTOCOLS)}")
    if protocol == "backtest":
        splits.check_backtest(split.get("cutoff"), split.get("horizon", 1.0))
    seed = split.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise bad("split.seed", seed, "must be an integer")
    fr = {}
    for k in splits.FRACTIONS:
        if k not in split:
            raise ValueError(f"config data.split.{k}: missing")
        v = split[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad(f"split.{k}", v, "must be a number inside (0, 1)")
        fr[k] = float(v)
    splits.check_fractions(fr)
    try:
        check_direction_overrides(data_cfg.get("direction_overrides"))
    except CorpusError as e:
        raise ValueError(str(e)) from e


def compile_corpus(
    raw: RawCorpus, data_cfg: Mapping[str, Any], progress: Callable[[str], None] = lambda s: None
) -> Compiled:
    """Cleans ``raw`` (dedupe, orient, z-score, drop tiny groups) and builds arrays and splits."""
    validate_data_config(data_cfg)
    report: dict[str, Any] = {"records_read": len(raw.records), "warnings": list(raw.warnings)}
    rec = raw.records
    key = ["task", "dataset", "model", "metric"]

    # --- directions: one per metric inside a group, and no conflicting duplicates ----------
    dirs = rec.groupby(["dataset", "task", "metric"], sort=False)["direction"].nunique()
    if (dirs > 1).any():
        ds, task, metric = dirs[dirs > 1].index[0]
        grp = rec[(rec.dataset == ds) & (rec.task == task) & (rec.metric == metric)]
        first = grp.index[0]
        other = grp.index[(grp["direction"] != grp.at[first, "direction"]).to_numpy()][0]

        def at(label) -> str:
            line = f" (line {int(rec.at[label, LINE])})" if LINE in rec.columns else ""
            return f"row {int(label) + 1}{line}"

        hib = {1: "1 (higher is better)", -1: "0 (lower is better)"}
        raise CorpusError(
            f"{raw.origin['records']} {at(other)}, field 'higher_is_better': "
            f"{hib[int(grp.at[other, 'direction'])]} conflicts with {at(first)}, which says "
            f"{hib[int(grp.at[first, 'direction'])]}, for the same evaluation group "
            f"(dataset {ds!r}, task {task!r}, metric {metric!r})",
            path=raw.origin["records"],
            row=int(other) + 1,
            field="higher_is_better",
        )

    # --- exact duplicates: mean of values ---------------------------------------------------
    progress("merging duplicates")
    agg = rec.groupby(key, sort=False).agg(
        value=("value", "mean"),
        n=("value", "size"),
        direction=("direction", "first"),
        source=("source", "first"),
    )
    agg = agg.join(_first_nonempty_by(rec, key, ["dataset_desp", "date"]).fillna(""))
    agg = agg.reset_index()
    report["duplicates_merged"] = int((agg["n"] - 1).sum())
    agg["oriented"] = agg["value"] * agg["direction"]
    report["lower_is_better_flipped"] = int((agg["direction"] < 0).sum())

    # --- backtest: models released after the horizon are not known yet -------------------
    cutoff_by_source: dict[str, int] = {}
    model_source: dict[str, str] = {}
    if data_cfg["split"].get("protocol", "random") == "backtest":
        agg, cutoff_by_source, model_source = _backtest_horizon(raw, agg, data_cfg, report)

    # --- groups with < min models kept out ---------------------------------------------------
    gkey = ["dataset", "task", "metric"]
    size = agg.groupby(gkey, sort=False)["model"].transform("size")
    small = size < int(data_cfg["min_group_models"])
    report["groups_too_small"] = int(agg[small].groupby(gkey).ngroups)
    report["records_in_small_groups"] = int(small.sum())
    agg = agg[~small].reset_index(drop=True)
    if len(agg) == 0:
        raise CorpusError(
            f"{raw.origin['records']}: no evaluation group (dataset, task, metric) has >= "
            f"{data_cfg['min_group_models']} models (data.min_group_models); the "
            f"{int(report['groups_too_small'])} groups have at most {int(size.max())}",
            path=raw.origin["records"],
        )

    # --- entities: models ----------------------------------------------------------------------
    progress("building vocabularies")
    mcols = [c for c in schema.MODEL_COLUMNS if c != "model"]
    mtab = _first_nonempty_by(raw.models, "model", mcols)
    model_names = sorted(set(agg["model"]))
    absent = [m for m in model_names if m not in mtab.index]
    if absent:
        report["warnings"].append(
            f"{len(absent)} models in the records are absent from the model metadata "
            f"({raw.origin.get('models') or 'none given'}): accepted with family derived from "
            f"the name and unknown size and release date, e.g. {absent[:3]}"
        )
    report["models_without_metadata"] = len(absent)
    mtab = mtab.reindex(model_names)
    params = pd.to_numeric(mtab["params"], errors="coerce").to_numpy(np.float64)
    fam_raw = mtab["family"].fillna("").astype(str).str.lower().to_numpy()
    families = np.array([features.family_name(m, f) for f, m in zip(fam_raw, model_names)])
    report["families_derived_from_name"] = int((fam_raw == "").sum())
    days = _release_days(mtab, agg, model_names)
    desc = mtab["model_desp"].fillna("").astype(str).to_numpy()

    # --- entities: datasets ----------------------------------------------------------------
    dcols = [c for c in schema.DATASET_COLUMNS if c != "dataset"]
    dtab = _first_nonempty_by(raw.datasets, "dataset", dcols)
    dataset_names = sorted(set(agg["dataset"]))
    rec_desc = _first_nonempty_by(agg, "dataset", ["dataset_desp"])["dataset_desp"].fillna("")
    rec_task = agg.groupby("dataset")["task"].agg("first")
    dtab = dtab.reindex(dataset_names)
    d_desc = [
        (d if isinstance(d, str) and d else rec_desc.get(n, "") or "")
        for n, d in zip(dataset_names, dtab["dataset_desp"])
    ]
    d_task = [
        t if isinstance(t, str) and t else rec_task[n] for n, t in zip(dataset_names, dtab["task"])
    ]
    d_mod = [m if isinstance(m, str) and m else "unknown" for m in dtab["modality"]]

    vocab = {
        "models": model_names,  # entity tables: no [UNK] row (features come from metadata)
        "datasets": dataset_names,
        "tasks": _vocab(agg["task"]),
        "metrics": _vocab(agg["metric"]),
        "families": _vocab(families),
        "modalities": _vocab(d_mod),
        "sources": _vocab(agg["source"]),
    }
    idx = {k: {v: i for i, v in enumerate(vs)} for k, vs in vocab.items()}

    # --- groups and records, sorted (group, value desc, model) --------------------------------
    progress("z-scoring and splitting")
    groups = agg[gkey].drop_duplicates().sort_values(gkey).reset_index(drop=True)
    gid = {tuple(r): i for i, r in enumerate(groups.itertuples(index=False, name=None))}
    rec_group = np.array([gid[t] for t in agg[gkey].itertuples(index=False, name=None)], np.int32)
    rec_model = agg["model"].map(idx["models"]).to_numpy(np.int32)
    order = np.lexsort((rec_model, -agg["oriented"].to_numpy(), rec_group))
    agg = agg.iloc[order].reset_index(drop=True)
    rec_group, rec_model = rec_group[order], rec_model[order]
    rec_dataset = agg["dataset"].map(idx["datasets"]).to_numpy(np.int32)
    value = agg["oriented"].to_numpy(np.float64)

    stratum = np.array([hash_str(f"{t}\x00{m}") for t, m in zip(d_task, d_mod)], np.uint64).astype(
        np.int64
    )
    fr = {k: float(data_cfg["split"][k]) for k in splits.FRACTIONS}
    common = dict(rec_model=rec_model, rec_dataset=rec_dataset, model_days=days, fractions=fr,
                  seed=int(data_cfg["split"]["seed"]))  # fmt: skip
    if data_cfg["split"].get("protocol", "random") == "backtest":
        # New datasets are a share of each source's (task, modality) strata.
        d_src = _primary(agg, "dataset").reindex(dataset_names).fillna("").to_numpy()
        stratum = np.array(
            [hash_str(f"{s}\x00{t}\x00{m}") for s, t, m in zip(d_src, d_task, d_mod)], np.uint64
        ).astype(np.int64)
        cut = np.array(
            [cutoff_by_source.get(model_source.get(m, ""), splits.NEVER) for m in model_names],
            np.int64,
        )
        split, setting = splits.assign_backtest(
            dataset_stratum=stratum, model_cutoff_day=cut, **common
        )
    else:
        split, setting = splits.assign(dataset_stratum=stratum, **common)

    z = zscores(rec_group, value, split, setting)

    offsets = np.r_[0, np.cumsum(np.bincount(rec_group, minlength=len(groups)))].astype(np.int64)
    # Learned IDs: 1 + rank among entities with a training record; 0 = [UNK].
    train = split == splits.TRAIN
    seen_m = np.zeros(len(model_names), bool)
    seen_m[rec_model[train]] = True
    seen_d = np.zeros(len(dataset_names), bool)
    seen_d[rec_dataset[train]] = True
    model_id = np.where(seen_m, np.cumsum(seen_m), 0).astype(np.int32)
    dataset_id = np.where(seen_d, np.cumsum(seen_d), 0).astype(np.int32)
    tokens, tok_mask = schema.name_token_array(
        model_names, int(data_cfg["name_buckets"]), int(data_cfg["max_name_tokens"])
    )

    arrays = {
        "rec_group": rec_group,
        "rec_model": rec_model,
        "rec_value": value.astype(np.float32),
        "rec_raw_value": agg["value"].to_numpy(np.float32),
        "rec_z": z.astype(np.float32),
        "rec_split": split,
        "rec_setting": setting,
        "rec_source": agg["source"].map(idx["sources"]).to_numpy(np.int16),
        "group_offsets": offsets,
        "group_dataset": groups["dataset"].map(idx["datasets"]).to_numpy(np.int32),
        "group_task": groups["task"].map(idx["tasks"]).to_numpy(np.int32),
        "group_metric": groups["metric"].map(idx["metrics"]).to_numpy(np.int32),
        "model_id": model_id,
        "model_family": np.array([idx["families"][f] for f in families], np.int32),
        "model_params": params.astype(np.float32),
        "model_size_bucket": schema.size_bucket(params, tuple(data_cfg["size_edges"])),
        "model_release_day": days,
        "model_name_tokens": tokens,
        "model_name_mask": tok_mask,
        "dataset_id": dataset_id,
        "dataset_modality": np.array([idx["modalities"][m] for m in d_mod], np.int32),
    }
    texts = {
        "models": [
            model_text(n, d, f, p) for n, d, f, p in zip(model_names, desc, families, params)
        ],
        "datasets": [dataset_text(n, t, d) for n, t, d in zip(dataset_names, d_task, d_desc)],
    }
    report.update(_summary(arrays, vocab))
    return Compiled(arrays, vocab, texts, report, values=value)


def zscores(rec_group: np.ndarray, value: np.ndarray, split: np.ndarray,
            setting: np.ndarray) -> np.ndarray:  # fmt: skip
    """z-scores inside each (group, partition): train records among train records, held-out
    records among the held-out records of the same split and setting (no leakage of test
    values into training targets)."""
    n_set = len(splits.ALL_SETTINGS)
    part = np.where(split == splits.TRAIN, 0, 1 + split * n_set + setting).astype(np.int64)
    zkey = rec_group.astype(np.int64) * 16 + part
    _, inv, cnt = np.unique(zkey, return_inverse=True, return_counts=True)
    mean = np.bincount(inv, value) / cnt
    var = np.bincount(inv, (value - mean[inv]) ** 2) / cnt
    # A partition whose values are all equal has z = 0 (its float mean can differ from the
    # value by an ulp, which would otherwise divide rounding noise by a ~1e-17 std).
    lo = np.full(len(cnt), np.inf)
    hi = np.full(len(cnt), -np.inf)
    np.minimum.at(lo, inv, value)
    np.maximum.at(hi, inv, value)
    std = np.where(hi > lo, np.sqrt(var), 0.0)
    return np.where(std[inv] > 0, (value - mean[inv]) / np.where(std[inv] > 0, std[inv], 1), 0.0)


def _release_days(mtab: pd.DataFrame, agg: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Per model of ``names``: release day since 1970 (-1 = undated). Where the model metadata
    has no release date, the earliest record date of the model stands in."""
    rel = pd.to_datetime(mtab["release_date"].reindex(names), errors="coerce")
    rec_dates = features.parse_dates(agg["date"].mask(agg["date"] == ""))
    first_seen = rec_dates.groupby(agg["model"]).min().reindex(names)
    return features.days_since_1970(rel.fillna(first_seen))


def _primary(agg: pd.DataFrame, entity: str) -> pd.Series:
    """Per model or dataset: the source most of its records come from (ties -> first name)."""
    n = agg.groupby([entity, "source"], sort=True).size().reset_index(name="n")
    n = n.sort_values([entity, "n", "source"], ascending=[True, False, True], kind="stable")
    return n.drop_duplicates(entity).set_index(entity)["source"]


def _backtest_horizon(
    raw: RawCorpus, agg: pd.DataFrame, data_cfg: Mapping[str, Any], report: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, int], dict[str, str]]:
    """One backtest fold's view of the records: per source, the cut-off and horizon days (the
    days by which ``cutoff`` / ``horizon`` of its dated models' records had arrived, see
    :func:`splits.quantile_days`), and the records without the models released after the
    horizon. Returns (records, cut-off day per source, primary source per model)."""
    names = sorted(set(agg["model"]))
    mcols = [c for c in schema.MODEL_COLUMNS if c != "model"]
    days = _release_days(_first_nonempty_by(raw.models, "model", mcols), agg, names)
    src = _primary(agg, "model").reindex(names).to_numpy()
    sources = sorted(set(src))
    code = np.array([sources.index(s) for s in src])
    weights = agg.groupby("model").size().reindex(names).to_numpy()
    sp = data_cfg["split"]
    cut = splits.quantile_days(days, code, weights, float(sp["cutoff"]), len(sources))
    hor = splits.quantile_days(days, code, weights, float(sp.get("horizon", 1.0)), len(sources))
    late = (days >= 0) & (days > hor[code])
    drop = agg["model"].isin(set(np.asarray(names)[late]))

    def iso(day: int) -> str | None:
        return None if day == splits.NEVER else str(_EPOCH + np.timedelta64(int(day), "D"))

    report["backtest"] = {
        "cutoff": {s: iso(d) for s, d in zip(sources, cut)},
        "horizon": {s: iso(d) for s, d in zip(sources, hor)},
        "models_after_cutoff": int(((days >= 0) & (days > cut[code]) & ~late).sum()),
        "models_after_horizon_dropped": int(late.sum()),
        "records_after_horizon_dropped": int(drop.sum()),
    }
    cutoff = {s: int(d) for s, d in zip(sources, cut)}
    return agg[~drop].reset_index(drop=True), cutoff, dict(zip(names, src))


def summary(a: dict[str, np.ndarray], vocab: dict[str, list[str]]) -> dict[str, Any]:
    """The counts of a corpus's report (records, entities, group sizes, splits, learned IDs)."""
    return _summary(a, vocab)


def _summary(a: dict[str, np.ndarray], vocab: dict[str, list[str]]) -> dict[str, Any]:
    sizes = np.diff(a["group_offsets"])
    buckets = np.bincount(a["model_size_bucket"], minlength=1)
    counts: dict[str, Any] = {
        "records": len(a["rec_group"]),
        "models": len(vocab["models"]),
        "datasets": len(vocab["datasets"]),
        "groups": len(sizes),
        "tasks": len(vocab["tasks"]) - 1,
        "metrics": len(vocab["metrics"]) - 1,
        "families": len(vocab["families"]) - 1,
        "group_size": {
            "median": float(np.median(sizes)),
            "max": int(sizes.max()),
            "min": int(sizes.min()),
        },
        "models_with_size": int((a["model_size_bucket"] > 0).sum()),
        "size_buckets": {str(i): int(c) for i, c in enumerate(buckets) if c},
        "learned_model_ids": int(a["model_id"].max()),
        "learned_dataset_ids": int(a["dataset_id"].max()),
    }
    sp = {}
    for sname, s in splits.SPLITS.items():
        for tname, t in splits.ALL_SETTINGS.items():
            n = int(((a["rec_split"] == s) & (a["rec_setting"] == t)).sum())
            if s == splits.TRAIN:
                sp["train"] = sp.get("train", 0) + n
            elif n:
                sp[f"{sname}/{tname}"] = n
    counts["splits"] = sp
    return counts


def hash_str(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")


def fingerprint(arrays: Mapping[str, np.ndarray], vocab: Mapping, texts: Mapping) -> str:
    """sha256 over array names, dtypes, shapes and bytes, vocabularies and texts."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        v = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{v.dtype.str}|{v.shape}".encode())
        h.update(v.tobytes())
    h.update(json.dumps(vocab, sort_keys=True).encode())
    h.update(json.dumps(texts, sort_keys=True).encode())
    return h.hexdigest()


def _is_replaceable(out: Path) -> bool:
    """An existing ``out`` may be replaced only if it is a compiled corpus or an empty dir."""
    if not out.is_dir() or out.is_symlink():
        return False
    return (out / "manifest.json").is_file() or not any(out.iterdir())


def write_corpus(compiled: Compiled, out: Path, *, config: Mapping[str, Any]) -> str:
    """Writes the corpus into ``out`` atomically; returns the fingerprint.

    Everything goes to a temp dir next to ``out`` that is renamed into place; a previous corpus
    at ``out`` is moved aside first and deleted after, or moved back if the rename fails. On any
    error the temp dir is removed, so ``out`` is either the previous corpus, absent (only if the
    process dies between the two renames) or complete. An existing ``out`` that is neither a
    compiled corpus nor an empty directory is never replaced.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not _is_replaceable(out):
            raise CorpusError(
                f"{out}: exists and is not a compiled corpus (no manifest.json); refusing to "
                "replace it: choose another --out or remove it",
                path=out,
            )
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(compiled.arrays, compiled.vocab, compiled.texts)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        (tmp / "arrays").mkdir()
        for k, v in compiled.arrays.items():
            np.save(tmp / "arrays" / f"{k}.npy", v, allow_pickle=False)
        (tmp / "vocab.json").write_text(json.dumps(compiled.vocab, ensure_ascii=False), "utf-8")
        (tmp / "texts.json").write_text(json.dumps(compiled.texts, ensure_ascii=False), "utf-8")
        manifest = {
            "format_version": FORMAT_VERSION,
            "fingerprint": fp,
            "report": compiled.report,
            "data_config": config,
        }
        (tmp / "manifest.json").write_text(
            json.dumps(manifest, indent=1, ensure_ascii=False), "utf-8"
        )
        fsutil.replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return fp


class Corpus:
    """A compiled corpus read back from disk (arrays memory-mapped)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        mpath = self.dir / "manifest.json"
        if not mpath.exists():
            raise CorpusError(f"{self.dir}: not a compiled corpus (no manifest.json)")
        self.manifest = json.loads(mpath.read_text())
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise CorpusError(
                f"{mpath}: format_version {self.manifest.get('format_version')} != "
                f"{FORMAT_VERSION}; re-run prepare"
            )
        self.vocab: dict[str, list[str]] = json.loads((self.dir / "vocab.json").read_text())
        self.texts: dict[str, list[str]] = json.loads((self.dir / "texts.json").read_text())
        self.arrays = {
            p.stem: np.load(p, mmap_mode="r") for p in sorted((self.dir / "arrays").glob("*.npy"))
        }

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def model_names(self) -> list[str]:
        return self.vocab["models"]

    @property
    def model_texts(self) -> list[str]:
        return self.texts["models"]

    @property
    def dataset_texts(self) -> list[str]:
        return self.texts["datasets"]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    @property
    def num_groups(self) -> int:
        return len(self.arrays["group_offsets"]) - 1


def load_corpus(directory: str | os.PathLike) -> Corpus:
    return Corpus(directory)


def build(
    data_cfg: Mapping[str, Any],
    progress: Callable[[str], None] = lambda s: None,
    *,
    direction_overrides: Mapping[str, int] | None = None,
) -> Compiled:
    """Reads ``data_cfg.source`` and compiles it (no writing). ``direction_overrides`` are
    merged over ``data_cfg.direction_overrides`` (for metric names a ConfigDict key cannot
    hold, such as names with dots). The config is checked before any file is read."""
    validate_data_config(data_cfg)
    overrides = {**dict(data_cfg["direction_overrides"]), **dict(direction_overrides or {})}
    report: dict[str, Any] = {}
    progress(f"reading {data_cfg['source']}")
    raw = read_corpus(
        str(data_cfg["source"]),
        fmt=str(data_cfg["format"]),
        direction_overrides=overrides,
        bad_rows=str(data_cfg.get("bad_rows", "error")),
        report=report,
    )
    compiled = compile_corpus(raw, data_cfg, progress)
    compiled.report.update(report)
    return compiled
