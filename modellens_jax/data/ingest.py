"""Read leaderboard records in either supported format and validate them row by row.

Two formats:
  leaderboard  records.csv[.gz] + models.csv[.gz] + datasets.csv[.gz]  (our corpus format)
  modellens    data.csv | data_clean.csv + task2id/metric2id/family2id/model2id/model2family/
               model_profile .json  (the public ModelLens corpus; no direction column, so the
               direction comes from ``schema.infer_direction`` plus user overrides)

Every problem raises ``CorpusError`` naming the file, the 1-based data row (header excluded)
and the field. Nothing is written here: compiling and writing happen in ``corpus.py``.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import math
import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from modellens_jax.data import schema

log = logging.getLogger(__name__)


class CorpusError(ValueError):
    """Bad input data or a config that contradicts it; the message names file, row and field."""


@dataclasses.dataclass
class RawCorpus:
    """Validated tables, still as strings and floats, before vocabularies and splits."""

    records: (
        pd.DataFrame
    )  # task dataset model metric value(float) dataset_desp direction(+1/-1) source date
    models: pd.DataFrame  # model family params(float, NaN unknown) model_desp release_date source
    datasets: pd.DataFrame  # dataset task dataset_desp modality source
    origin: dict[str, str]  # which files were read
    warnings: list[str]


# --- file helpers -------------------------------------------------------------------------------
def _find(directory: Path, stem: str, required: bool = True) -> Path | None:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (directory / name).exists():
            return directory / name
    if required:
        raise CorpusError(f"{directory}: no {stem}.csv or {stem}.csv.gz")
    return None


def _read_csv(path: Path, columns: tuple[str, ...], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """All fields as strings (empty = missing); checks the header and that the file has rows."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise CorpusError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 text ({e})") from e
    if not text.strip():
        raise CorpusError(f"{path}: empty file (expected a header with {', '.join(columns)})")
    try:
        df = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            on_bad_lines="error",
            engine="c",
        )
    except pd.errors.ParserError as e:
        raise CorpusError(f"{path}: malformed CSV: {e}") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing}; header is {list(df.columns)}")
    if len(df) == 0:
        raise CorpusError(f"{path}: no data rows")
    keep = [c for c in (*columns, *optional) if c in df.columns]
    df = df[keep].copy()
    for c in keep:
        df[c] = df[c].str.strip()
    df.attrs["path"] = str(path)
    return df


def _where(df: pd.DataFrame, idx: int, field: str) -> str:
    return f"{df.attrs.get('path', '?')} row {int(idx) + 1}, field '{field}'"


def _require_nonempty(df: pd.DataFrame, fields: tuple[str, ...]) -> None:
    for f in fields:
        bad = np.flatnonzero(df[f].to_numpy() == "")
        if len(bad):
            raise CorpusError(f"{_where(df, bad[0], f)}: empty value ({len(bad)} such rows)")


def _parse_float(
    df: pd.DataFrame, field: str, *, allow_empty: bool, bad_rows: str, report: dict
) -> np.ndarray:
    """Strict float parsing; NaN/inf/garbage raise (or are dropped with bad_rows='skip')."""
    s = df[field]
    vals = pd.to_numeric(s.where(s != "", None), errors="coerce").to_numpy(np.float64)
    empty = (s == "").to_numpy()
    bad = ~np.isfinite(vals) & ~(empty & allow_empty)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "empty" if s.iloc[i] == "" else f"{s.iloc[i]!r} is not a finite number"
        if bad_rows != "skip":
            raise CorpusError(f"{_where(df, i, field)}: {what} ({int(bad.sum())} such rows)")
        report.setdefault("rejected", {})[f"non-finite {field}"] = int(bad.sum())
    return vals


def _parse_dates(df: pd.DataFrame, field: str) -> pd.Series:
    s = df[field]
    d = pd.to_datetime(s.where(s != "", None), errors="coerce", format="ISO8601")
    bad = d.isna().to_numpy() & (s != "").to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CorpusError(f"{_where(df, i, field)}: {s.iloc[i]!r} is not an ISO date")
    return d


# --- leaderboard format -------------------------------------------------------------------------
def read_leaderboard(directory: Path, *, bad_rows: str = "error", report: dict) -> RawCorpus:
    """Our corpus format (see ``modellens_jax/resources/leaderboard-v1/README.md``)."""
    rec_path = _find(directory, "records")
    records = _read_csv(rec_path, schema.LEADERBOARD_RECORD_COLUMNS)
    _require_nonempty(records, schema.RECORD_COLUMNS)
    hib = records["higher_is_better"]
    bad = ~hib.isin(["0", "1"]).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CorpusError(
            f"{_where(records, i, 'higher_is_better')}: {hib.iloc[i]!r} is not 0 or 1 "
            "(unknown metric direction)"
        )
    records["value"] = _parse_float(
        records, "value", allow_empty=False, bad_rows=bad_rows, report=report
    )
    records["direction"] = np.where(hib.to_numpy() == "1", 1, -1).astype(np.int8)
    _parse_dates(records, "date")
    records = records[np.isfinite(records["value"].to_numpy())]

    warnings: list[str] = []
    mod_path = _find(directory, "models", required=False)
    if mod_path is not None:
        models = _read_csv(mod_path, schema.MODEL_COLUMNS)
        _require_nonempty(models, ("model",))
        models["params"] = _parse_float(
            models, "params", allow_empty=True, bad_rows="error", report=report
        )
        neg = np.flatnonzero(models["params"].to_numpy() < 0)
        if len(neg):
            raise CorpusError(f"{_where(models, neg[0], 'params')}: negative parameter count")
        models["release_date"] = _parse_dates(models, "release_date")
    else:
        warnings.append(f"{directory}: no models.csv; all model metadata unknown")
        models = pd.DataFrame(columns=list(schema.MODEL_COLUMNS))
    ds_path = _find(directory, "datasets", required=False)
    if ds_path is not None:
        datasets = _read_csv(ds_path, schema.DATASET_COLUMNS)
        _require_nonempty(datasets, ("dataset",))
    else:
        warnings.append(f"{directory}: no datasets.csv; dataset modality unknown")
        datasets = pd.DataFrame(columns=list(schema.DATASET_COLUMNS))
    origin = {"records": str(rec_path), "models": str(mod_path), "datasets": str(ds_path)}
    return RawCorpus(records, models, datasets, origin, warnings)


# --- ModelLens format ---------------------------------------------------------------------------
def _load_json(path: Path, value_type: type | tuple[type, ...], required: bool = True) -> dict:
    if not path.exists():
        if required:
            raise CorpusError(f"{path}: missing (required by the ModelLens corpus format)")
        return {}
    try:
        obj = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise CorpusError(f"{path}: expected a JSON object name -> value, got {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(v, value_type) or isinstance(v, bool):
            want = getattr(value_type, "__name__", None) or "/".join(t.__name__ for t in value_type)
            raise CorpusError(f"{path}: key {k!r}: expected {want}, got {type(v).__name__} ({v!r})")
    return obj


def read_modellens(
    directory: Path,
    *,
    direction_overrides: Mapping[str, int] | None = None,
    bad_rows: str = "error",
    report: dict,
) -> RawCorpus:
    """The public ModelLens corpus: data.csv or data_clean.csv plus its JSON side files."""
    path = next(
        (
            directory / n
            for n in ("data.csv", "data_clean.csv", "data.csv.gz")
            if (directory / n).exists()
        ),
        None,
    )
    if path is None:
        raise CorpusError(f"{directory}: no data.csv or data_clean.csv (ModelLens format)")
    records = _read_csv(path, schema.MODELLENS_RECORD_COLUMNS)
    _require_nonempty(records, schema.RECORD_COLUMNS)
    records["value"] = _parse_float(
        records, "value", allow_empty=False, bad_rows=bad_rows, report=report
    )
    records = records[np.isfinite(records["value"].to_numpy())]
    overrides = {str(k): int(v) for k, v in (direction_overrides or {}).items()}
    for k, v in overrides.items():
        if v not in (1, -1):
            raise CorpusError(f"config data.direction_overrides[{k!r}] = {v}: must be +1 or -1")
    directions: dict[str, int] = {}
    for i, m in enumerate(records["metric"].to_numpy()):
        if m not in directions:
            d = schema.infer_direction(m, overrides)
            if d is None:
                raise CorpusError(
                    f"{_where(records, i, 'metric')}: unknown direction for metric {m!r}; "
                    f"set --config.data.direction_overrides='{{\"{m}\": 1}}' (or -1)"
                )
            directions[m] = d
    records["direction"] = records["metric"].map(directions).astype(np.int8)
    records["higher_is_better"] = (records["direction"] > 0).astype(int).astype(str)
    records["source"] = "modellens"
    records["date"] = ""

    for name in ("task2id", "metric2id", "family2id", "model2id"):
        _load_json(directory / f"{name}.json", int)
    model2family = _load_json(directory / "model2family.json", str)
    profiles = _load_json(directory / "model_profile.json", dict, required=False)
    rows = []
    names = sorted(set(model2family) | set(profiles))
    for name in names:
        prof = profiles.get(name, {})
        size = prof.get("size", "unknown")
        if size in (None, "unknown", ""):
            size = math.nan
        elif isinstance(size, (int, float)) and not isinstance(size, bool):
            size = float(size)
        else:
            raise CorpusError(
                f"{directory / 'model_profile.json'}: model {name!r}, field 'size': expected a "
                f'number of billions or "unknown", got {size!r}'
            )
        family = prof.get("family") or model2family.get(name) or ""
        if not isinstance(family, str):
            raise CorpusError(
                f"{directory / 'model_profile.json'}: model {name!r}, field 'family': expected a "
                f"string, got {family!r}"
            )
        rows.append(
            {
                "model": name,
                "family": family.lower(),
                "params": size,
                "model_desp": str(prof.get("description", "") or ""),
                "release_date": pd.to_datetime(prof.get("release_date"), errors="coerce"),
                "source": "modellens",
            }
        )
    models = pd.DataFrame(rows, columns=list(schema.MODEL_COLUMNS))
    datasets = pd.DataFrame(columns=list(schema.DATASET_COLUMNS))
    origin = {"records": str(path), "models": str(directory / "model_profile.json"), "datasets": ""}
    return RawCorpus(records, models, datasets, origin, [])


def detect_format(directory: Path) -> str:
    """'leaderboard' if records.csv[.gz] exists, 'modellens' if data[_clean].csv does."""
    if any((directory / n).exists() for n in ("records.csv", "records.csv.gz")):
        return "leaderboard"
    if any((directory / n).exists() for n in ("data.csv", "data_clean.csv", "data.csv.gz")):
        return "modellens"
    if not directory.is_dir():
        raise CorpusError(f"{directory}: not a directory")
    raise CorpusError(
        f"{directory}: neither records.csv[.gz] (leaderboard format) nor data.csv / "
        "data_clean.csv (ModelLens format)"
    )


def shipped_corpus_dir(name: str) -> Path:
    """Directory of a corpus shipped inside the package (e.g. 'leaderboard-v1')."""
    return Path(__file__).resolve().parent.parent / "resources" / name


def resolve_source(source: str) -> Path:
    """A shipped corpus name or a directory path."""
    shipped = shipped_corpus_dir(source)
    if "/" not in source and shipped.is_dir():
        return shipped
    p = Path(os.path.expanduser(source))
    if not p.exists():
        raise CorpusError(f"data.source {source!r}: no such shipped corpus or directory")
    return p


def read_corpus(
    source: str,
    *,
    fmt: str = "auto",
    direction_overrides: Mapping[str, int] | None = None,
    bad_rows: str = "error",
    report: dict,
) -> RawCorpus:
    """Reads and validates a corpus directory in either format."""
    directory = resolve_source(source)
    fmt = detect_format(directory) if fmt == "auto" else fmt
    if fmt == "leaderboard":
        raw = read_leaderboard(directory, bad_rows=bad_rows, report=report)
        if direction_overrides:
            d = dict(direction_overrides)
            hit = raw.records["metric"].isin(list(d))
            raw.records.loc[hit, "direction"] = (
                raw.records.loc[hit, "metric"].map(d).astype(np.int8)
            )
        return raw
    if fmt == "modellens":
        return read_modellens(
            directory, direction_overrides=direction_overrides, bad_rows=bad_rows, report=report
        )
    raise CorpusError(f"config data.format={fmt!r}: expected auto, leaderboard or modellens")
