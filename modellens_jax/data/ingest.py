"""Read leaderboard records in either supported format and validate them row by row.

Two formats:
  leaderboard  records.csv[.gz] + models.csv[.gz] + datasets.csv[.gz]  (our corpus format)
  modellens    data.csv | data_clean.csv (optionally .gz) + task2id/metric2id/family2id/model2id/
               model2family/model_profile .json  (the public ModelLens corpus; no direction
               column, so the direction comes from ``schema.infer_direction`` plus user overrides)

Every problem raises ``CorpusError`` naming the file, the 1-based data row (header and blank
lines excluded; the file line follows in brackets) and the field, e.g.
``records.csv row 3 (line 4), field 'value': 'abc' is not a number``. For the JSON side files
the row is the 1-based entry number and the key is named. Nothing is written here: compiling
and writing happen in ``corpus.py``.

Decisions (documented in the corpus README):
  - a model in the records but absent from the model metadata is accepted: a warning is
    reported, its family is derived from the name and its size and release date are unknown;
  - an empty ``higher_is_better`` falls back to ``data.direction_overrides`` and then to the
    metric-direction table; a metric neither can resolve is an error;
  - ``data.direction_overrides`` (metric -> +1/-1) also override a ``higher_is_better`` column.
"""

from __future__ import annotations

import csv
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
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from modellens_jax.data import features, schema

log = logging.getLogger(__name__)

LINE = "_line"  # column added to every table read from CSV: the file line a row starts on

# A field may be this long (descriptions of 200+ KB are real); the default 128 KiB limit refused
# them. An unbalanced quote is still caught: the strict reader then reaches the end of the file
# inside a quoted field, or the next row has the wrong number of fields.
FIELD_SIZE_LIMIT = 1 << 24
csv.field_size_limit(max(csv.field_size_limit(), FIELD_SIZE_LIMIT))
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Duplicate records (same task, dataset, model, metric) are merged as the mean of their values
# when they agree within this fraction of the larger magnitude (sources rounding differently);
# further apart, they contradict each other and are refused (bad_rows="skip": dropped, counted,
# and the first such pair named in a warning).
DUPLICATE_TOLERANCE = 0.25


class CorpusError(ValueError):
    """Bad input data or a config that contradicts it; the message names file, row and field.

    Attributes, None where they do not apply: ``path`` (the file, or "config"), ``row`` (1-based
    data row, header excluded; for a JSON side file the 1-based entry) and ``field``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike | None = None,
        row: int | None = None,
        field: str | None = None,
    ):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.row = row
        self.field = field


def _fail(
    path: str | os.PathLike,
    msg: str,
    *,
    row: int | None = None,
    line: int | None = None,
    field: str | None = None,
    entry: str | None = None,
) -> NoReturn:
    where = str(path)
    if row is not None:
        where += f" row {row}" if entry is None else f" entry {row} ({entry!r})"
        if line is not None:
            where += f" (line {line})"
    elif line is not None:
        where += f" line {line}"
    if field is not None:
        where += f", field '{field}'"
    raise CorpusError(f"{where}: {msg}", path=path, row=row, field=field)


@dataclasses.dataclass
class RawCorpus:
    """Validated tables, still as strings and floats, before vocabularies and splits.

    Table index = 0-based data row of the file it came from; ``_line`` = its file line.
    """

    records: (
        pd.DataFrame
    )  # task dataset model metric value(float) dataset_desp direction(+1/-1) source date
    models: pd.DataFrame  # model family params(float, NaN unknown) model_desp release_date source
    datasets: pd.DataFrame  # dataset task dataset_desp modality source
    origin: dict[str, str]  # which files were read
    warnings: list[str]


# --- file helpers -------------------------------------------------------------------------------
def _find(directory: Path, stem: str, required: bool = True) -> Path | None:
    both = [directory / n for n in (f"{stem}.csv", f"{stem}.csv.gz") if (directory / n).exists()]
    if len(both) > 1:
        raise CorpusError(
            f"{directory}: both {stem}.csv and {stem}.csv.gz exist; remove the one that is not "
            "current (which one to read would be a guess)",
            path=directory,
        )
    if both:
        return both[0]
    if required:
        raise CorpusError(f"{directory}: no {stem}.csv or {stem}.csv.gz", path=directory)
    return None


def _read_text(path: Path) -> str:
    """The file as text: gunzipped when it ends in .gz, UTF-8 (a BOM is dropped)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        _fail(path, f"cannot read ({e.strerror or e})")
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            _fail(path, f"unreadable gzip ({type(e).__name__}: {e})")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        _fail(path, f"not UTF-8 text (byte {e.start})", line=raw[: e.start].count(b"\n") + 1)


def _read_csv(path: Path, columns: tuple[str, ...], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """All fields as stripped strings (empty = missing), plus ``_line``.

    Checks: non-empty file, header with every column in ``columns`` (no duplicates), at least one
    data row, every row with as many fields as the header, well-formed quoting. Blank lines are
    skipped and not counted as rows.
    """
    text = _read_text(path)
    if not text.strip():
        _fail(path, f"empty file (expected a header line: {','.join(columns)})", line=1)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    prev = 0
    try:
        header = []
        for rec in reader:  # first non-blank line
            prev = reader.line_num
            if rec and any(f.strip() for f in rec):
                header = [h.strip() for h in rec]
                break
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            _fail(path, f"duplicate column(s) {dup} in the header", line=prev, field=dup[0])
        missing = [c for c in columns if c not in header]
        if missing:
            _fail(
                path,
                f"missing column(s) {missing}; the header is {header}",
                line=prev,
                field=missing[0],
            )
        for rec in reader:
            start, prev = prev + 1, reader.line_num
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue
            if len(rec) != len(header):
                _fail(
                    path,
                    f"malformed CSV: expected {len(header)} fields as in the header, got "
                    f"{len(rec)} (an unquoted comma or a missing field?)",
                    row=len(rows) + 1,
                    line=start,
                )
            rows.append(rec)
            lines.append(start)
    except csv.Error as e:
        _fail(
            path,
            f"malformed CSV ({e}; an unbalanced quote?)",
            row=len(rows) + 1,
            line=prev + 1,
        )
    if not rows:
        _fail(path, "no data rows after the header", row=1, line=prev + 1)
    df = pd.DataFrame(rows, columns=header, dtype=str)
    keep = [c for c in (*columns, *optional) if c in df.columns]
    df = df[keep].copy()
    for c in keep:
        df[c] = df[c].str.strip()
    df[LINE] = np.asarray(lines, np.int64)
    df.attrs["path"] = str(path)
    return df


def _fail_at(df: pd.DataFrame, label, field: str, msg: str) -> NoReturn:
    """Raises for the row with index ``label`` (0-based data row) of a table read by _read_csv."""
    line = int(df.at[label, LINE]) if LINE in df.columns else None
    _fail(df.attrs.get("path", "?"), msg, row=int(label) + 1, line=line, field=field)


def _require_nonempty(df: pd.DataFrame, fields: tuple[str, ...]) -> None:
    for f in fields:
        bad = df.index[(df[f] == "").to_numpy()]
        if len(bad):
            _fail_at(df, bad[0], f, f"empty value ({len(bad)} such rows)")


def _parse_float(
    df: pd.DataFrame, field: str, *, allow_empty: bool, bad_rows: str, report: dict
) -> np.ndarray:
    """Strict float parsing; NaN/inf/garbage raise (or are counted with bad_rows='skip' and
    left as NaN for the caller to drop)."""
    s = df[field]
    empty = (s == "").to_numpy()
    vals = pd.to_numeric(s.mask(empty), errors="coerce").to_numpy(np.float64)
    huge = np.abs(vals) > FLOAT32_MAX  # stored as float32: would become inf (NaN: False)
    bad = (~np.isfinite(vals) | huge) & ~(empty & allow_empty)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        text = s.iloc[i]
        try:
            x = float(text)
            what = (
                f"{text!r} is out of range (|x| > {FLOAT32_MAX:.4g}, the float32 maximum)"
                if math.isfinite(x)
                else f"{text!r} is not a finite number"
            )
        except ValueError:  # (empty values were refused before, or are allowed)
            what = f"{text!r} is not a number"
        if bad_rows != "skip":
            _fail_at(df, df.index[i], field, f"{what} ({int(bad.sum())} such rows)")
        rej = report.setdefault("rejected", {})
        key = f"bad {field}"
        rej[key] = rej.get(key, 0) + int(bad.sum())
    return vals


def _conflicting_duplicates(
    records: pd.DataFrame, path: Path, bad_rows: str, report: dict
) -> pd.DataFrame:
    """Refuses (or with bad_rows='skip' drops, counts and warns about) duplicate records whose
    values differ by more than DUPLICATE_TOLERANCE of the larger magnitude."""
    key = ["task", "dataset", "model", "metric"]
    dup = records.duplicated(key, keep=False).to_numpy()
    if not dup.any():
        return records
    sub = records[dup]
    g = sub.groupby(key, sort=False)["value"]
    lo, hi = g.transform("min").to_numpy(), g.transform("max").to_numpy()
    scale = np.maximum(np.abs(lo), np.abs(hi))
    conflict = (hi - lo) > DUPLICATE_TOLERANCE * scale + 1e-12
    if not conflict.any():
        return records
    i = int(np.flatnonzero(conflict)[0])
    label = sub.index[i]
    rows = sub[(sub[key] == sub.loc[label, key]).all(axis=1)]
    vals = ", ".join(
        f"{v:g} (row {int(r) + 1}, line {int(ln)})"
        for r, v, ln in zip(rows.index, rows["value"], rows[LINE])
    )
    msg = (
        f"conflicting duplicate records for (task {rows.iloc[0]['task']!r}, dataset "
        f"{rows.iloc[0]['dataset']!r}, model {rows.iloc[0]['model']!r}, metric "
        f"{rows.iloc[0]['metric']!r}): {vals} differ by more than "
        f"{DUPLICATE_TOLERANCE:.0%}; fix or remove one (bad_rows=skip drops them)"
    )
    if bad_rows != "skip":
        _fail(path, msg, row=int(rows.index[-1]) + 1, line=int(rows[LINE].iloc[-1]), field="value")
    drop = sub.index[conflict]
    rej = report.setdefault("rejected", {})
    rej["conflicting duplicates"] = rej.get("conflicting duplicates", 0) + len(drop)
    report.setdefault("conflict_warnings", []).append(f"{path}: dropped {len(drop)} records: {msg}")
    log.warning("%s: dropped %d records: %s", path, len(drop), msg)
    return records.drop(index=drop)


def _to_datetime(values) -> pd.Series:
    """ISO dates to naive UTC timestamps; unparseable -> NaT (``features.parse_dates``)."""
    return features.parse_dates(values)


def _parse_dates(df: pd.DataFrame, field: str) -> pd.Series:
    s = df[field]
    d = _to_datetime(s.mask(s == "")).set_axis(df.index)
    bad = d.isna().to_numpy() & (s != "").to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _fail_at(df, df.index[i], field, f"{s.iloc[i]!r} is not an ISO date (YYYY-MM-DD)")
    return d


def check_direction_overrides(overrides: Mapping[str, Any] | None) -> dict[str, int]:
    """``data.direction_overrides`` as {metric: +1 | -1}; anything else is a config error."""
    out: dict[str, int] = {}
    for k, v in dict(overrides or {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            v_int = None
        else:
            try:
                v_int = int(float(v))
            except ValueError:
                v_int = None
            if v_int is not None and float(v) != v_int:
                v_int = None
        if v_int not in (1, -1):
            raise CorpusError(
                f"config data.direction_overrides[{k!r}] = {v!r}: must be +1 (higher is better) "
                "or -1 (lower is better)",
                path="config",
                field=f"direction_overrides.{k}",
            )
        out[str(k)] = v_int
    return out


def _override_hint(metric: str) -> str:
    return (
        f"set --config.data.direction_overrides='{{\"{metric}\": -1}}' (or 1 for higher is "
        f"better), or with the prepare command --direction_overrides='{{\"{metric}\": -1}}' "
        "(also for metric names with dots)"
    )


# --- leaderboard format -------------------------------------------------------------------------
def read_leaderboard(
    directory: Path,
    *,
    bad_rows: str = "error",
    report: dict,
    direction_overrides: Mapping[str, int] | None = None,
) -> RawCorpus:
    """Our corpus format (see ``modellens_jax/resources/leaderboard-v1/README.md``)."""
    overrides = check_direction_overrides(direction_overrides)
    rec_path = _find(directory, "records")
    records = _read_csv(rec_path, schema.LEADERBOARD_RECORD_COLUMNS)
    _require_nonempty(records, schema.RECORD_COLUMNS)
    hib = records["higher_is_better"]
    bad = ~hib.isin(["0", "1", ""]).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _fail_at(
            records,
            records.index[i],
            "higher_is_better",
            f"{hib.iloc[i]!r} is not 0 or 1 (empty = infer from the metric name)",
        )
    direction = np.where(hib.to_numpy() == "1", 1, -1).astype(np.int8)
    metrics = records["metric"].to_numpy()
    # Empty higher_is_better: override, then the metric table.
    inferred: dict[str, int | None] = {}
    for i in np.flatnonzero((hib == "").to_numpy()):
        m = metrics[i]
        if m not in inferred:
            inferred[m] = schema.infer_direction(m, overrides)
        if inferred[m] is None:
            _fail_at(
                records,
                records.index[i],
                "higher_is_better",
                f"empty, and the direction of metric {m!r} cannot be inferred; "
                + _override_hint(m),
            )
        direction[i] = inferred[m]
    if overrides:  # overrides also win over the column
        hit = records["metric"].isin(list(overrides)).to_numpy()
        direction[hit] = records["metric"][hit].map(overrides).to_numpy(np.int8)
    records["direction"] = direction
    records["value"] = _parse_float(
        records, "value", allow_empty=False, bad_rows=bad_rows, report=report
    )
    _parse_dates(records, "date")
    records = records[np.isfinite(records["value"].to_numpy())]
    records = _conflicting_duplicates(records, rec_path, bad_rows, report)

    warnings: list[str] = _unused_overrides(overrides, records)
    mod_path = _find(directory, "models", required=False)
    if mod_path is not None:
        models = _read_csv(mod_path, schema.MODEL_COLUMNS)
        _require_nonempty(models, ("model",))
        models["params"] = _parse_float(
            models, "params", allow_empty=True, bad_rows="error", report=report
        )
        neg = models.index[(models["params"] < 0).to_numpy()]
        if len(neg):
            _fail_at(
                models,
                neg[0],
                "params",
                f"negative parameter count {models.at[neg[0], 'params']:g} (billions)",
            )
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
    origin = {
        "records": str(rec_path),
        "models": str(mod_path or ""),
        "datasets": str(ds_path or ""),
    }
    return RawCorpus(records, models, datasets, origin, warnings)


def _unused_overrides(overrides: Mapping[str, int], records: pd.DataFrame) -> list[str]:
    unused = sorted(set(overrides) - set(records["metric"]))
    if not unused:
        return []
    return [f"data.direction_overrides names metrics absent from the records: {unused}"]


# --- ModelLens format ---------------------------------------------------------------------------
_TYPE_NAMES = {int: "an integer", str: "a string", dict: "an object"}


def _load_json(path: Path, value_type: type, field: str, required: bool = True) -> dict[str, Any]:
    """A JSON object name -> value, each value of ``value_type`` (bool is not an int)."""
    if not path.exists():
        if required:
            _fail(path, "missing (required by the ModelLens corpus format)")
        return {}
    try:
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        _fail(path, f"cannot read as UTF-8 text ({e})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        _fail(path, f"invalid JSON ({e.msg}, column {e.colno})", line=e.lineno)
    if not isinstance(obj, dict):
        _fail(path, f"expected a JSON object {{name: {field}}}, got {type(obj).__name__}")
    for n, (k, v) in enumerate(obj.items(), 1):
        if not isinstance(v, value_type) or isinstance(v, bool):
            _fail(
                path,
                f"expected {_TYPE_NAMES[value_type]}, got {type(v).__name__} ({v!r})",
                row=n,
                entry=k,
                field=field,
            )
    return obj


def _profile_size(path: Path, n: int, name: str, size: Any) -> float:
    """Billions of parameters; "unknown", null, "" and 0 -> NaN (as upstream)."""
    if size is None or (isinstance(size, str) and size.strip().lower() in ("", "unknown")):
        return math.nan
    x = None
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        x = float(size)
    elif isinstance(size, str):
        try:
            x = float(size)
        except ValueError:
            x = None
    if x is None:
        _fail(
            path,
            f'expected a number of billions or "unknown", got {type(size).__name__} ({size!r})',
            row=n,
            entry=name,
            field="size",
        )
    if not math.isfinite(x) or x < 0:
        _fail(
            path,
            f"size {size!r} must be a finite, non-negative number",
            row=n,
            entry=name,
            field="size",
        )
    return math.nan if x == 0 else x


def _profile_str(path: Path, n: int, name: str, prof: dict, key: str) -> str:
    v = prof.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        _fail(
            path, f"expected a string, got {type(v).__name__} ({v!r})", row=n, entry=name, field=key
        )
    return v.strip()


def read_modellens(
    directory: Path,
    *,
    direction_overrides: Mapping[str, int] | None = None,
    bad_rows: str = "error",
    report: dict,
) -> RawCorpus:
    """The public ModelLens corpus: data.csv or data_clean.csv plus its JSON side files."""
    overrides = check_direction_overrides(direction_overrides)
    for stem in ("data", "data_clean"):
        if (directory / f"{stem}.csv").exists() and (directory / f"{stem}.csv.gz").exists():
            _find(directory, stem)  # refuses the ambiguity
    path = next(
        (
            directory / n
            for n in ("data.csv", "data_clean.csv", "data.csv.gz", "data_clean.csv.gz")
            if (directory / n).exists()
        ),
        None,
    )
    if path is None:
        raise CorpusError(
            f"{directory}: no data.csv or data_clean.csv (ModelLens format)", path=directory
        )
    records = _read_csv(path, schema.MODELLENS_RECORD_COLUMNS)
    _require_nonempty(records, schema.RECORD_COLUMNS)
    records["value"] = _parse_float(
        records, "value", allow_empty=False, bad_rows=bad_rows, report=report
    )
    records = records[np.isfinite(records["value"].to_numpy())]
    records = _conflicting_duplicates(records, path, bad_rows, report)
    directions: dict[str, int] = {}
    for label, m in zip(records.index, records["metric"].to_numpy()):
        if m not in directions:
            d = schema.infer_direction(m, overrides)
            if d is None:
                _fail_at(
                    records,
                    label,
                    "metric",
                    f"unknown direction for metric {m!r} (the ModelLens format has no "
                    "higher_is_better column and the metric table cannot tell); "
                    + _override_hint(m),
                )
            directions[m] = d
    records["direction"] = records["metric"].map(directions).astype(np.int8)
    records["higher_is_better"] = (records["direction"] > 0).astype(int).astype(str)
    records["source"] = "modellens"
    records["date"] = ""

    for name in ("task2id", "metric2id", "family2id", "model2id"):
        _load_json(directory / f"{name}.json", int, "id")
    model2family = _load_json(directory / "model2family.json", str, "family")
    prof_path = directory / "model_profile.json"
    profiles = _load_json(prof_path, dict, "profile", required=False)
    rows: dict[str, dict[str, Any]] = {}
    for n, (name, prof) in enumerate(profiles.items(), 1):
        family = _profile_str(prof_path, n, name, prof, "family")
        date = _profile_str(prof_path, n, name, prof, "release_date")
        release = _to_datetime([date or None]).iloc[0]
        if date and pd.isna(release):
            _fail(
                prof_path,
                f"{date!r} is not an ISO date (YYYY-MM-DD)",
                row=n,
                entry=name,
                field="release_date",
            )
        rows[name] = {
            "model": name,
            "family": "" if family.lower() == "unknown" else family.lower(),
            "params": _profile_size(prof_path, n, name, prof.get("size")),
            "model_desp": _profile_str(prof_path, n, name, prof, "description"),
            "release_date": release,
            "source": "modellens",
        }
    for name, family in model2family.items():  # profile family first, then model2family
        fam = family.strip().lower()
        fam = "" if fam == "unknown" else fam
        row = rows.setdefault(
            name,
            {
                "model": name,
                "family": "",
                "params": math.nan,
                "model_desp": "",
                "release_date": pd.NaT,
                "source": "modellens",
            },
        )
        row["family"] = row["family"] or fam
    models = pd.DataFrame(
        [rows[k] for k in sorted(rows)], columns=list(schema.MODEL_COLUMNS)
    ).astype({"params": np.float64})
    datasets = pd.DataFrame(columns=list(schema.DATASET_COLUMNS))
    origin = {
        "records": str(path),
        "models": f"{directory / 'model2family.json'}, {prof_path}",
        "datasets": "",
    }
    return RawCorpus(records, models, datasets, origin, _unused_overrides(overrides, records))


def detect_format(directory: Path) -> str:
    """'leaderboard' if records.csv[.gz] exists, 'modellens' if data[_clean].csv[.gz] does."""
    if not directory.is_dir():
        raise CorpusError(f"{directory}: not a directory", path=directory)
    if any((directory / n).exists() for n in ("records.csv", "records.csv.gz")):
        return "leaderboard"
    names = ("data.csv", "data_clean.csv", "data.csv.gz", "data_clean.csv.gz")
    if any((directory / n).exists() for n in names):
        return "modellens"
    raise CorpusError(
        f"{directory}: neither records.csv[.gz] (leaderboard format) nor data.csv / "
        "data_clean.csv (ModelLens format)",
        path=directory,
    )


def shipped_corpus_dir(name: str) -> Path:
    """Directory of a corpus shipped inside the package (e.g. 'leaderboard-v1')."""
    return Path(__file__).resolve().parent.parent / "resources" / name


def resolve_source(source: str) -> Path:
    """A shipped corpus name or a directory path."""
    if not str(source).strip():
        raise CorpusError(
            "config data.source is empty: a shipped corpus name or a directory",
            path="config",
            field="source",
        )
    shipped = shipped_corpus_dir(source)
    if "/" not in source and shipped.is_dir():
        return shipped
    p = Path(os.path.expanduser(source))
    if not p.exists():
        raise CorpusError(
            f"data.source {source!r}: no such shipped corpus or directory",
            path=source,
            field="source",
        )
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
    if fmt not in ("auto", "leaderboard", "modellens"):
        raise CorpusError(
            f"config data.format={fmt!r}: expected auto, leaderboard or modellens",
            path="config",
            field="format",
        )
    directory = resolve_source(source)
    fmt = detect_format(directory) if fmt == "auto" else fmt
    if fmt == "leaderboard":
        return read_leaderboard(
            directory, bad_rows=bad_rows, report=report, direction_overrides=direction_overrides
        )
    return read_modellens(
        directory, direction_overrides=direction_overrides, bad_rows=bad_rows, report=report
    )
