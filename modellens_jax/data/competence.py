"""Competence features: how each model did on related training records, per (model, group).

What a practitioner ranks by when no model has been run on the new dataset: the model's mean
within-group z-score over all its training records and over those of the same task, source,
modality and dataset, its z on the training datasets whose descriptions are most similar
(weighted by cosine), its family's record, and its size and release date, absolute and relative
to the other candidates of the group.

**Leakage rule.** The statistics of a record ``(model m, group g)`` are computed over the
training records of groups other than ``g`` (and the similar-dataset memory over datasets other
than ``g``'s), so a training record's features carry no trace of its own group's values and
equal what a held-out group of the same kind sees. numpy only (used by the learning-to-rank
baseline; no JAX, no training code).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from modellens_jax.data import splits

# Feature columns in order; ``HISTORY`` are those a model without training records lacks (NaN).
HISTORY = (
    "model_mean_z",
    "model_log_records",
    "model_task_z",
    "model_source_z",
    "model_modality_z",
    "model_dataset_z",
    "similar_datasets_z",
    "similar_datasets_coverage",
)
NAMES = (
    *HISTORY,
    "family_mean_z",
    "family_task_z",
    "family_log_records",
    "log_size",
    "log_size_vs_group",
    "size_percentile_in_group",
    "release_years",
    "release_vs_group",
)
NEIGHBOURS = 10  # training datasets in the similar-dataset memory
# Units for the scorer's input (``encode``): counts in log-decades, dates in years around 2024.
_UNITS = {
    "model_log_records": (0.0, 1 / 3),
    "family_log_records": (0.0, 1 / 3),
    "release_years": (54.0, 0.5),  # years since 1970; 54 = 2024
    "release_vs_group": (0.0, 0.5),
}


def group_sources(corpus) -> np.ndarray:
    """Per group: its records' source (the most frequent one if they mix; ties -> lower id)."""
    src = np.asarray(corpus["rec_source"]).astype(np.int64)
    rec_group = np.asarray(corpus["rec_group"]).astype(np.int64)
    n_src = max(len(corpus.vocab["sources"]), int(src.max(initial=0)) + 1)
    counts = np.zeros((corpus.num_groups, n_src), np.int64)
    np.add.at(counts, (rec_group, src), 1)
    return counts.argmax(1)


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values`` at ``query`` in ``sorted_keys`` (0 where absent)."""
    if not len(sorted_keys):
        return np.zeros(len(query), values.dtype)
    i = np.minimum(np.searchsorted(sorted_keys, query), len(sorted_keys) - 1)
    return np.where(sorted_keys[i] == query, values[i], 0)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def similar_datasets(
    dataset_desc: np.ndarray, group_dataset: np.ndarray, trained: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per group: the ``k`` training datasets (``trained`` mask) most similar to its dataset by
    description cosine, never its own, and their weights ``max(cos, 0)``; ``[G, k]`` each, index
    -1 / weight 0 where fewer exist."""
    G = len(group_dataset)
    idx = np.full((G, k), -1, np.int64)
    w = np.zeros((G, k))
    cand = np.flatnonzero(trained)
    if dataset_desc.shape[1] == 0 or not len(cand) or k <= 0:
        return idx, w
    e = _unit(dataset_desc)
    kk = min(k, len(cand))
    for a in range(0, G, 2048):
        gd = np.asarray(group_dataset[a : a + 2048], np.int64)
        sim = e[gd] @ e[cand].T
        sim[cand[None, :] == gd[:, None]] = -np.inf  # never the group's own dataset
        top = np.argsort(-sim, axis=1, kind="stable")[:, :kk]
        s = np.take_along_axis(sim, top, 1)
        ok = np.isfinite(s)
        idx[a : a + len(gd), :kk] = np.where(ok, cand[top], -1)
        w[a : a + len(gd), :kk] = np.where(ok, np.maximum(s, 0.0), 0.0)
    return idx, w


def group_relative(x: np.ndarray, rec_group: np.ndarray, G: int) -> tuple[np.ndarray, ...]:
    """Per record: ``x`` minus the mean of the group's known values, and its percentile among
    them (0 = smallest, 1 = largest, ties averaged; NaN where ``x`` is unknown)."""
    ok = np.isfinite(x)
    cnt = np.bincount(rec_group[ok], minlength=G).astype(np.float64)
    mean = np.bincount(rec_group[ok], x[ok], minlength=G) / np.maximum(cnt, 1)
    rel = np.where(ok, x - mean[rec_group], np.nan)
    pct = np.full(len(x), np.nan)
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((x[idx], rec_group[idx]))]
    g_sorted, x_sorted = rec_group[order], x[order]
    start = np.searchsorted(g_sorted, g_sorted, side="left")  # the group's first position
    # average rank of ties: first and last position of each (group, value) run
    new_run = np.r_[True, (g_sorted[1:] != g_sorted[:-1]) | (x_sorted[1:] != x_sorted[:-1])]
    run_id = np.cumsum(new_run) - 1
    run_first = np.flatnonzero(new_run)
    run_last = np.r_[run_first[1:], len(order)] - 1
    avg = (run_first[run_id] + run_last[run_id]) / 2 - start
    n = cnt[g_sorted]
    pct[order] = np.where(n > 1, avg / np.maximum(n - 1, 1), 0.5)
    return rel, pct


@dataclasses.dataclass(frozen=True)
class Entities:
    """Per-entity attributes the features read. Serving appends rows (new models, a new
    dataset, the query's group); existing indices keep their meaning."""

    model_family: np.ndarray  # [M] int
    model_params: np.ndarray  # [M] float, billions (NaN or <= 0: unknown)
    model_release_day: np.ndarray  # [M] int, days since 1970 (< 0: unknown)
    group_dataset: np.ndarray  # [G] int
    group_task: np.ndarray  # [G] int
    group_source: np.ndarray  # [G] int
    dataset_modality: np.ndarray  # [D] int
    dataset_desc: np.ndarray  # [D, Dd] (Dd may be 0)

    @classmethod
    def of(cls, tables) -> Entities:
        """The entities of a corpus's feature tables."""
        c = tables.corpus
        return cls(
            model_family=np.asarray(c["model_family"], np.int64),
            model_params=np.asarray(c["model_params"], np.float64),
            model_release_day=np.asarray(c["model_release_day"], np.int64),
            group_dataset=np.asarray(tables.group_dataset, np.int64),
            group_task=np.asarray(c["group_task"], np.int64),
            group_source=group_sources(c),
            dataset_modality=np.asarray(c["dataset_modality"], np.int64),
            dataset_desc=np.asarray(tables.dataset_desc),
        )


_BIG = np.int64(1) << 20  # > any vocabulary size: key = a * _BIG + b is unique


def _keys(ent: Entities, m: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
    """The statistic keys of records (model m, group g)."""
    task, gd = ent.group_task[g], ent.group_dataset[g]
    fam = ent.model_family[m]
    return {
        "model": m,
        "model_task": m * _BIG + task,
        "model_source": m * _BIG + ent.group_source[g],
        "model_modality": m * _BIG + ent.dataset_modality[gd],
        "model_dataset": m * _BIG + gd,
        "family": fam,
        "family_task": fam * _BIG + task,
    }


class _Sums:
    """Sums and counts of z per key and per (key, group): a record's mean over the memory's
    records with its key in *other* groups is two lookups."""

    def __init__(self, key: np.ndarray, group: np.ndarray, z: np.ndarray):
        self.keys, inv = np.unique(key, return_inverse=True)
        self.sum, self.cnt = np.bincount(inv, z), np.bincount(inv).astype(np.float64)
        self.kg, invg = np.unique(key * _BIG + group, return_inverse=True)
        self.sum_g, self.cnt_g = np.bincount(invg, z), np.bincount(invg).astype(np.float64)

    def mean(self, key: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kg = key * _BIG + group
        s = _lookup(self.keys, self.sum, key) - _lookup(self.kg, self.sum_g, kg)
        c = _lookup(self.keys, self.cnt, key) - _lookup(self.kg, self.cnt_g, kg)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.maximum(c, 1), np.nan), c


class Memory:
    """What the features know: the statistics of the training records (``rec_*``, indices into
    ``ent``), built once; :meth:`features` then describes any (model, group) records, those of
    training itself (their own group left out) or a serving query's."""

    def __init__(self, ent: Entities, rec_model, rec_group, rec_z, *, k: int = NEIGHBOURS):
        m, g = np.asarray(rec_model, np.int64), np.asarray(rec_group, np.int64)
        z = np.asarray(rec_z, np.float64)
        if len(ent.model_family) >= _BIG or len(ent.dataset_modality) >= _BIG:
            raise ValueError(f"vocabularies of {_BIG:,} or more entries are not supported")
        self.k = int(k)
        self.sums = {name: _Sums(key, g, z) for name, key in _keys(ent, m, g).items()}
        self.trained = np.zeros(len(ent.dataset_modality), bool)
        self.trained[ent.group_dataset[g]] = True
        dm = ent.group_dataset[g] * _BIG + m
        self.dm, inv = np.unique(dm, return_inverse=True)
        self.dm_mean = np.bincount(inv, z) / np.bincount(inv)

    @classmethod
    def of(cls, tables, *, k: int = NEIGHBOURS) -> Memory:
        """The memory of a corpus's training records (``rec_split == TRAIN``)."""
        train = np.asarray(tables.corpus["rec_split"]) == splits.TRAIN
        return cls(Entities.of(tables), tables.rec_model[train], tables.rec_group[train],
                   tables.rec_z[train], k=k)  # fmt: skip

    def features(self, ent: Entities, rec_model, rec_group, *, cold: bool = False) -> np.ndarray:
        """``[N, len(NAMES)]`` float32 features of records (model, group) over ``ent`` (the
        memory's entities, possibly with rows appended), from the memory's records of other
        groups; relative size and release are over each group's records given here.

        ``cold=True`` gives every record the features it would have if its model were new,
        i.e. had no records at all: no history means (NaN), 0 records, 0 similar-dataset
        coverage, and the family's record without the model's own."""
        m, g = np.asarray(rec_model, np.int64), np.asarray(rec_group, np.int64)
        keys = _keys(ent, m, g)
        mean = {name: self.sums[name].mean(keys[name], g) for name in self.sums}
        cols: dict[str, np.ndarray] = {}
        cols["model_mean_z"], n_m = mean["model"]
        cols["model_log_records"] = np.log1p(n_m)
        for name in ("task", "source", "modality", "dataset"):
            cols[f"model_{name}_z"] = mean[f"model_{name}"][0]
        cols["similar_datasets_z"], cov_all = self._similar(ent, m, g)
        cols["similar_datasets_coverage"] = cov_all
        cols["family_mean_z"], n_f = mean["family"]
        cols["family_task_z"], n_ft = mean["family_task"]
        if cold:  # the family without the model itself (its own records are history too)
            n_mt = mean["model_task"][1]
            for col, n_fam, n_own, own in (
                ("family_mean_z", n_f, n_m, cols["model_mean_z"]),
                ("family_task_z", n_ft, n_mt, cols["model_task_z"]),
            ):
                rest = n_fam - n_own
                total = np.nan_to_num(cols[col]) * n_fam - np.nan_to_num(own) * n_own
                cols[col] = np.where(rest > 0, total / np.maximum(rest, 1), np.nan)
            n_f = n_f - n_m
            # exactly what a model without records gets: no means, 0 records, 0 coverage
            for name in HISTORY:
                cols[name] = np.full(len(m), np.nan)
            cols["model_log_records"] = np.zeros(len(m))
            cols["similar_datasets_coverage"] = np.where(np.isfinite(cov_all), 0.0, np.nan)
        cols["family_log_records"] = np.log1p(n_f)

        ug, gi = np.unique(g, return_inverse=True)
        p = ent.model_params[m]
        log_size = np.where(np.isfinite(p) & (p > 0), np.log10(np.where(p > 0, p, 1.0)), np.nan)
        cols["log_size"] = log_size
        cols["log_size_vs_group"], cols["size_percentile_in_group"] = group_relative(
            log_size, gi, len(ug)
        )
        day = ent.model_release_day[m].astype(np.float64)
        years = np.where(day >= 0, day / 365.25, np.nan)
        cols["release_years"] = years
        cols["release_vs_group"], _ = group_relative(years, gi, len(ug))
        return np.stack([cols[n] for n in NAMES], 1).astype(np.float32)

    def _similar(self, ent: Entities, m: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, ...]:
        """(weighted mean z of the model on the ``k`` most similar memory datasets, the share
        of their weight it has records on) per record."""
        ug, gi = np.unique(g, return_inverse=True)
        trained = np.zeros(len(ent.dataset_modality), bool)
        trained[: len(self.trained)] = self.trained
        nbr, w = similar_datasets(ent.dataset_desc, ent.group_dataset[ug], trained, self.k)
        num = np.zeros(len(m))
        den = np.zeros(len(m))
        for j in range(nbr.shape[1]):
            d_j, w_j = nbr[gi, j], w[gi, j]
            q = np.where(d_j >= 0, d_j, 0) * _BIG + m
            has = (_lookup(self.dm, np.ones(len(self.dm)), q) > 0) & (d_j >= 0)
            num += np.where(has, w_j * _lookup(self.dm, self.dm_mean, q), 0.0)
            den += np.where(has, w_j, 0.0)
        tot = w.sum(1)[gi]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (
                np.where(den > 0, num / np.maximum(den, 1e-12), np.nan),
                np.where(tot > 0, den / np.maximum(tot, 1e-12), np.nan),
            )


def features(tables, *, k: int = NEIGHBOURS, cold: bool = False) -> np.ndarray:
    """``[num_records, len(NAMES)]`` float32 competence features of every corpus record, from
    the training records (``rec_split == TRAIN``) of other groups only (see the module doc and
    :meth:`Memory.features`)."""
    memory = Memory.of(tables, k=k)
    return memory.features(Entities.of(tables), tables.rec_model, tables.rec_group, cold=cold)


def encode(x: np.ndarray) -> np.ndarray:
    """Features in the scorer's units (``(x - offset) * scale`` per column; NaN stays NaN, the
    scorer reads it as unknown)."""
    off = np.asarray([_UNITS.get(n, (0.0, 1.0))[0] for n in NAMES], np.float32)
    scale = np.asarray([_UNITS.get(n, (0.0, 1.0))[1] for n in NAMES], np.float32)
    return ((np.asarray(x, np.float32) - off) * scale).astype(np.float32)
