"""The scorer's inputs and the one builder of their rows (numpy only; no jax).

``MODEL_INPUTS`` and ``CONTEXT_INPUTS`` list every per-model and per-context (dataset, task,
metric) input of the scorer with its dtype and trailing shape; the batch contract
(``data.batch``), the scorer (``model``), the exported signatures (``export``) and serving all
read them from here. The row builders turn model metadata (name, family, size, release date,
description vector) and context metadata into those rows: for the compiled corpus in training
(``pipeline.FeatureTables``) and for new candidates and queries in serving, so both featurise
alike. Dates go through one parser, the corpus's (``parse_dates``: pandas, imported lazily).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from modellens_jax.data import schema


@dataclasses.dataclass(frozen=True)
class Input:
    """One input of the scorer: a row per entity of ``dtype`` with trailing dimensions named by
    sizes (``"max_name_tokens"``, ``"model_desc_dim"``, ...); ``switch`` is the scorer's
    ``use_*`` attribute that reads it (None: always read)."""

    name: str
    dtype: str
    dims: tuple[str, ...] = ()
    switch: str | None = None

    def shape(self, rows: Any, sizes: Mapping[str, Any]) -> tuple:
        """``(rows, *trailing)`` with each named dimension taken from ``sizes``."""
        return (rows, *(sizes[d] for d in self.dims))


MODEL_INPUTS: tuple[Input, ...] = (
    Input("model_id", "int32"),  # learned-ID row, 0 = [UNK] (unseen in training)
    Input("name_tokens", "int32", ("max_name_tokens",), "use_model_name"),
    Input("name_mask", "bool", ("max_name_tokens",), "use_model_name"),
    Input("model_desc", "float32", ("model_desc_dim",), "use_model_desc"),
    Input("size_bucket", "int32", (), "use_size_feature"),  # 0 = unknown size
    Input("log_size", "float32", (), "use_size_feature"),  # 0 when unknown
    Input("release", "float32", (), "use_release"),  # years since 2000, 0 when unknown
    Input("family", "int32", (), "use_family"),  # 0 = [UNK]
)
CONTEXT_INPUTS: tuple[Input, ...] = (
    Input("dataset_id", "int32", (), "use_dataset_id"),
    Input("dataset_desc", "float32", ("dataset_desc_dim",), "use_dataset_desc"),
    Input("task", "int32"),
    Input("metric", "int32"),
)
MODEL_KEYS: tuple[str, ...] = tuple(i.name for i in MODEL_INPUTS)
CONTEXT_KEYS: tuple[str, ...] = tuple(i.name for i in CONTEXT_INPUTS)
# the description vectors are stored apart (memory-mapped embedding tables), not as rows
MODEL_ROW_KEYS = tuple(k for k in MODEL_KEYS if k != "model_desc")
CONTEXT_ROW_KEYS = tuple(k for k in CONTEXT_KEYS if k != "dataset_desc")


def specs(inputs: Sequence[Input], rows: Any, sizes: Mapping[str, Any]) -> dict[str, tuple]:
    """``{name: (shape, dtype name)}`` of ``inputs`` with ``rows`` rows (a number or a symbol)."""
    return {i.name: (i.shape(rows, sizes), i.dtype) for i in inputs}


def used(inputs: Sequence[Input], switch_on: Callable[[str], bool]) -> list[str]:
    """Names of the ``inputs`` a scorer reads, given its ``use_*`` switches."""
    return [i.name for i in inputs if i.switch is None or switch_on(i.switch)]


def empty(inputs: Sequence[Input], rows: int, sizes: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Zero rows (every id [UNK], every feature unknown) of ``inputs``."""
    return {i.name: np.zeros(i.shape(rows, sizes), i.dtype) for i in inputs}


# --- texts and metadata -----------------------------------------------------------------------
def model_text(name: str, desc: str, family: str, params: float) -> str:
    """The text embedded for a model: its description, prefixed by the name; when there is no
    description, one derived from name, family and size ("<name>. Family: f. Parameters: 7B.")."""
    size = f" Parameters: {params:g}B." if np.isfinite(params) and params > 0 else ""
    fam = f" Family: {family}." if family and family != "unknown" else ""
    if desc:
        return f"{name}. {desc}"
    return f"{name}.{fam}{size}"


def dataset_text(name: str, task: str, desc: str) -> str:
    """The text embedded for a dataset: name, task and description."""
    return f"{name} ({task}). {desc}" if desc else f"{name} ({task})."


def family_name(model: str, family: str) -> str:
    """A model's family: the given one, lower-cased, else derived from its name."""
    return (family or "").lower() or schema.derive_family(model)


EPOCH = np.datetime64("1970-01-01", "D")


def parse_dates(values: Iterable[Any]):
    """ISO dates to naive UTC timestamps (a pandas Series); unparseable -> NaT. The one date
    parser of corpus records, model metadata and serving's candidates."""
    import pandas as pd

    d = pd.to_datetime(pd.Series(values), errors="coerce", format="ISO8601", utc=True)
    return d.dt.tz_localize(None)


def days_since_1970(timestamps) -> np.ndarray:
    """Timestamps (NaT = undated) as int32 days since 1970, -1 for undated."""
    import pandas as pd

    t = pd.Series(timestamps)
    return np.where(t.isna(), -1, (t.to_numpy("datetime64[D]") - EPOCH).astype(np.int64)).astype(
        np.int32
    )


def release_days(values: Sequence[str]) -> tuple[np.ndarray, int | None]:
    """ISO release dates (empty = undated) as days since 1970 (-1 undated), and the index of the
    first value that is not an ISO date (None when all parse)."""
    values = [(v or "").strip() for v in values]
    days = np.full(len(values), -1, np.int64)
    given = [i for i, v in enumerate(values) if v]
    if not given:
        return days, None
    parsed = parse_dates([values[i] for i in given])
    bad = np.flatnonzero(parsed.isna().to_numpy())
    days[given] = days_since_1970(parsed)
    return days, (given[int(bad[0])] if len(bad) else None)


# --- rows ---------------------------------------------------------------------------------------
def model_rows(
    *,
    model_id: np.ndarray,
    name_tokens: np.ndarray,
    name_mask: np.ndarray,
    size_bucket: np.ndarray,
    params: np.ndarray,
    release_day: np.ndarray,
    family: np.ndarray,
) -> dict[str, np.ndarray]:
    """The model rows (every model input but the description vector) from per-model metadata:
    ids, hashed name tokens, size bucket, parameters in billions (NaN unknown), release day
    since 1970 (< 0 undated) and family id."""
    rows = {
        "model_id": np.asarray(model_id),
        "name_tokens": np.asarray(name_tokens),
        "name_mask": np.asarray(name_mask),
        "size_bucket": np.asarray(size_bucket),
        "log_size": schema.log_size(np.asarray(params)),
        "release": schema.release_years(np.asarray(release_day)),
        "family": np.asarray(family),
    }
    return {k: rows[k] for k in MODEL_ROW_KEYS}


def corpus_model_rows(c: Any) -> dict[str, np.ndarray]:
    """:func:`model_rows` of every model of a compiled corpus."""
    return model_rows(
        model_id=c["model_id"],
        name_tokens=c["model_name_tokens"],
        name_mask=c["model_name_mask"],
        size_bucket=c["model_size_bucket"],
        params=c["model_params"],
        release_day=c["model_release_day"],
        family=c["model_family"],
    )


def new_model_rows(
    names: Sequence[str],
    *,
    params: np.ndarray,
    release_day: np.ndarray,
    family: np.ndarray,
    name_buckets: int,
    max_name_tokens: int,
    size_edges: Sequence[float],
) -> dict[str, np.ndarray]:
    """:func:`model_rows` of models without a learned ID (``model_id`` 0): their own name tokens
    and size bucket, computed as the corpus computes them."""
    tokens, mask = schema.name_token_array(list(names), name_buckets, max_name_tokens)
    return model_rows(
        model_id=np.zeros(len(names), np.int32),
        name_tokens=tokens,
        name_mask=mask,
        size_bucket=schema.size_bucket(params, tuple(size_edges)),
        params=params,
        release_day=release_day,
        family=family,
    )


def context_rows(
    *, dataset_id: np.ndarray, task: np.ndarray, metric: np.ndarray
) -> dict[str, np.ndarray]:
    """The context rows (every context input but the description vector)."""
    rows = {"dataset_id": np.asarray(dataset_id), "task": np.asarray(task),
            "metric": np.asarray(metric)}  # fmt: skip
    return {k: rows[k] for k in CONTEXT_ROW_KEYS}
