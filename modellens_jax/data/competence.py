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


def other_group_mean(
    key: np.ndarray, rec_group: np.ndarray, z: np.ndarray, train: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per record: (mean z, count) of the training records that share its ``key`` and lie in
    another group (NaN mean where there are none)."""
    key, g = np.asarray(key, np.int64), np.asarray(rec_group, np.int64)
    G = int(g.max(initial=0)) + 1
    tk, tg, tz = key[train], g[train], np.asarray(z, np.float64)[train]
    uk, inv = np.unique(tk, return_inverse=True)
    s_all, c_all = np.bincount(inv, tz), np.bincount(inv).astype(np.float64)
    ukg, invg = np.unique(tk * G + tg, return_inverse=True)
    s_g, c_g = np.bincount(invg, tz), np.bincount(invg).astype(np.float64)
    s = _lookup(uk, s_all, key) - _lookup(ukg, s_g, key * G + g)
    c = _lookup(uk, c_all, key) - _lookup(ukg, c_g, key * G + g)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan), c


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


def features(tables, *, k: int = NEIGHBOURS, cold: bool = False) -> np.ndarray:
    """``[num_records, len(NAMES)]`` float32 competence features of every corpus record, from
    the training records (``rec_split == TRAIN``) of other groups only (see the module doc).

    ``cold=True`` gives every record the features it would have if its model were new: the
    ``HISTORY`` columns NaN and the family's record without the model's own (how a ranker
    learns to rank models that arrive without history, with nothing of theirs leaking in)."""
    c = tables.corpus
    train = np.asarray(c["rec_split"]) == splits.TRAIN
    m = np.asarray(tables.rec_model, np.int64)
    g = np.asarray(tables.rec_group, np.int64)
    z = np.asarray(tables.rec_z, np.float64)
    G, M = c.num_groups, len(c.model_names)
    gd = np.asarray(tables.group_dataset, np.int64)
    task = np.asarray(c["group_task"], np.int64)[g]
    src = group_sources(c)[g]
    modality = np.asarray(c["dataset_modality"], np.int64)[gd][g]
    fam = np.asarray(c["model_family"], np.int64)[m]
    D = len(c.vocab["datasets"])
    big = np.int64(1) << 20  # > any vocabulary size: key = a * big + b is unique

    cols: dict[str, np.ndarray] = {}
    cols["model_mean_z"], n_m = other_group_mean(m, g, z, train)
    cols["model_log_records"] = np.log1p(n_m)
    cols["model_task_z"], _ = other_group_mean(m * big + task, g, z, train)
    cols["model_source_z"], _ = other_group_mean(m * big + src, g, z, train)
    cols["model_modality_z"], _ = other_group_mean(m * big + modality, g, z, train)
    cols["model_dataset_z"], _ = other_group_mean(m * big + gd[g], g, z, train)

    # similar-dataset memory: mean train z of (dataset, model) over the k nearest datasets
    trained = np.zeros(D, bool)
    trained[gd[g[train]]] = True
    nbr, w = similar_datasets(np.asarray(tables.dataset_desc), gd, trained, k)
    dm = gd[g[train]] * M + m[train]
    udm, inv = np.unique(dm, return_inverse=True)
    dm_mean = np.bincount(inv, z[train]) / np.bincount(inv)
    num = np.zeros(len(m))
    den = np.zeros(len(m))
    for j in range(nbr.shape[1]):
        d_j, w_j = nbr[g, j], w[g, j]
        q = np.where(d_j >= 0, d_j, 0) * M + m
        has = (_lookup(udm, np.ones(len(udm)), q) > 0) & (d_j >= 0)
        num += np.where(has, w_j * _lookup(udm, dm_mean, q), 0.0)
        den += np.where(has, w_j, 0.0)
    tot = w.sum(1)[g]
    cols["similar_datasets_z"] = np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)
    cols["similar_datasets_coverage"] = np.where(tot > 0, den / np.maximum(tot, 1e-12), np.nan)

    cols["family_mean_z"], n_f = other_group_mean(fam, g, z, train)
    cols["family_task_z"], n_ft = other_group_mean(fam * big + task, g, z, train)
    if cold:  # the family without the model itself (its own records are history too)
        n_mt = other_group_mean(m * big + task, g, z, train)[1]
        for col, n_fam, n_own, own in (
            ("family_mean_z", n_f, n_m, cols["model_mean_z"]),
            ("family_task_z", n_ft, n_mt, cols["model_task_z"]),
        ):
            rest = n_fam - n_own
            total = np.nan_to_num(cols[col]) * n_fam - np.nan_to_num(own) * n_own
            cols[col] = np.where(rest > 0, total / np.maximum(rest, 1), np.nan)
        n_f = n_f - n_m
        for name in HISTORY:
            cols[name] = np.full(len(m), np.nan)
    cols["family_log_records"] = np.log1p(n_f)

    p = np.asarray(c["model_params"], np.float64)[m]
    log_size = np.where(np.isfinite(p) & (p > 0), np.log10(np.where(p > 0, p, 1.0)), np.nan)
    cols["log_size"] = log_size
    cols["log_size_vs_group"], cols["size_percentile_in_group"] = group_relative(log_size, g, G)
    day = np.asarray(c["model_release_day"], np.float64)[m]
    years = np.where(day >= 0, day / 365.25, np.nan)
    cols["release_years"] = years
    cols["release_vs_group"], _ = group_relative(years, g, G)
    return np.stack([cols[n] for n in NAMES], 1).astype(np.float32)
