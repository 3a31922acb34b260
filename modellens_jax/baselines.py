"""Baselines: what a user could do without the learned model, scored by the same harness.

Every baseline is fit on **training records only** (``rec_split == TRAIN``) plus metadata that
every model and dataset has (size, family, task, metric, descriptions), and reduces to one score
per (model, group) pair. We compute that score for every record of the corpus at fit time, so a
baseline is a :class:`Baseline` scorer that gathers ``score[record]`` for the record slots of an
evaluation batch (``evaluate`` adds the ``record`` key for scorers with ``needs_records``).

=====================  ===========================================================================
``random``             seeded uniform noise per record
``size``               log parameter count, bigger is better; unknown size -> median known size
``popularity``         number of training records of the model. The shipped corpus has no
                       popularity (downloads) column, so this is the proxy: how often the model
                       was evaluated. Unseen models all tie at 0
``family_mean``        mean training z-score of the model's family (0 for a family without
                       training records)
``competence``         the model's mean within-group z-score over its training records
                       ("general competence"); its family mean when it has none; then 0
``text_similarity``    cosine of the dataset and model description embeddings (skipped when the
                       tables carry no embeddings)
``gbr``                scikit-learn ``HistGradientBoostingRegressor`` of the z-score from
                       metadata: log size, family, task, metric, modality, and the description
                       embeddings reduced by PCA (optional extra ``[eval]``)
``matrix_factorisation``  ALS on the training z-scores, ``z ≈ b_m + u_m · v_g``; a model or group
                       without training records falls back to ``competence``
``lambdarank``         LightGBM LambdaRank over the competence features of
                       ``modellens_jax.data.competence`` (the model's z over all / same task /
                       source / modality / dataset, on the most similar training datasets, its
                       family's, size and release absolute and relative to the group), trained on
                       the training groups (features from *other* groups only) plus a copy in
                       which a seeded half of the models lose their history, as new models do
                       (optional extra ``[eval]``)
=====================  ===========================================================================

Ties in a baseline's scores (unknown sizes, a shared family) are broken by the harness in a
seeded random order, never in the ground-truth order of the slots (see ``evaluate``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

import numpy as np

from modellens_jax.data import competence, pipeline, splits

NAMES = (
    "random",
    "size",
    "popularity",
    "family_mean",
    "competence",
    "text_similarity",
    "gbr",
    "matrix_factorisation",
    "lambdarank",
)


class BaselineUnavailable(RuntimeError):
    """A baseline that cannot be fit here (missing embeddings or optional dependency)."""


@dataclasses.dataclass
class Baseline:
    """A scorer over evaluation batches from one fitted score per corpus record."""

    name: str
    record_scores: np.ndarray  # [num_records] float32
    description: str = ""
    fit_seconds: float = 0.0
    needs_records: ClassVar[bool] = True  # evaluate adds batch["record"] ([R, L], -1 = padding)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        rec = np.asarray(batch["record"])
        s = self.record_scores[np.maximum(rec, 0)]
        return np.where(rec >= 0, s, 0.0).astype(np.float32)


# --- training statistics --------------------------------------------------------------------------
class TrainStats:
    """Per-model and per-family means of the training z-scores (nothing from held-out records)."""

    def __init__(self, tables: pipeline.FeatureTables):
        c = tables.corpus
        self.tables = tables
        self.num_models = len(c.model_names)
        self.num_groups = c.num_groups
        self.train = np.asarray(c["rec_split"]) == splits.TRAIN
        self.family = np.asarray(c["model_family"]).astype(np.int64)
        self.t_model = tables.rec_model[self.train].astype(np.int64)
        self.t_group = tables.rec_group[self.train].astype(np.int64)
        self.t_z = tables.rec_z[self.train].astype(np.float64)
        M = self.num_models
        self.model_count = np.bincount(self.t_model, minlength=M)
        msum = np.bincount(self.t_model, self.t_z, minlength=M)
        self.model_mean = np.where(self.model_count > 0, msum / np.maximum(self.model_count, 1), 0)
        F = int(self.family.max()) + 1 if M else 1
        fam = self.family[self.t_model]
        fcount = np.bincount(fam, minlength=F)
        self.family_count = fcount
        self.family_mean = np.bincount(fam, self.t_z, minlength=F) / np.maximum(fcount, 1)
        self.competence = np.where(
            self.model_count > 0, self.model_mean, self.family_mean[self.family]
        )
        self.group_count = np.bincount(self.t_group, minlength=self.num_groups)

    def per_record(self, model_scores: np.ndarray) -> np.ndarray:
        return np.asarray(model_scores, np.float64)[self.tables.rec_model].astype(np.float32)


# --- the baselines --------------------------------------------------------------------------------
def fit_random(stats: TrainStats, seed: int = 0) -> np.ndarray:
    n = len(stats.tables.rec_model)
    return np.random.default_rng(np.random.SeedSequence([seed, 7])).random(n).astype(np.float32)


def log_params(stats: TrainStats) -> np.ndarray:
    """log10 parameters (billions) per model; NaN where unknown."""
    p = np.asarray(stats.tables.corpus["model_params"], np.float64)
    ok = np.isfinite(p) & (p > 0)
    return np.where(ok, np.log10(np.where(ok, p, 1.0)), np.nan)


def fit_size(stats: TrainStats) -> np.ndarray:
    lp = log_params(stats)
    known = np.isfinite(lp)
    median = float(np.median(lp[known])) if known.any() else 0.0
    return stats.per_record(np.where(known, lp, median))


def fit_popularity(stats: TrainStats) -> np.ndarray:
    return stats.per_record(stats.model_count.astype(np.float64))


def fit_family_mean(stats: TrainStats) -> np.ndarray:
    return stats.per_record(stats.family_mean[stats.family])


def fit_competence(stats: TrainStats) -> np.ndarray:
    return stats.per_record(stats.competence)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _require_descriptions(stats: TrainStats) -> tuple[np.ndarray, np.ndarray]:
    t = stats.tables
    dm, dd = t.model_desc.shape[1], t.dataset_desc.shape[1]
    if dm == 0 or dd == 0:
        raise BaselineUnavailable(
            "no description embeddings in the feature tables (descriptions are disabled or the "
            "corpus was not embedded: run `python -m modellens_jax.embed` and enable "
            "model.use_model_desc / model.use_dataset_desc)"
        )
    return t.model_desc, t.dataset_desc


def fit_text_similarity(stats: TrainStats, chunk: int = 16384) -> np.ndarray:
    model_desc, dataset_desc = _require_descriptions(stats)
    if model_desc.shape[1] != dataset_desc.shape[1]:
        raise BaselineUnavailable(
            f"model and dataset embeddings differ in width ({model_desc.shape[1]} vs "
            f"{dataset_desc.shape[1]}): not one embedding space"
        )
    m = _unit_rows(model_desc)
    d = _unit_rows(dataset_desc)
    t = stats.tables
    rec_ds = t.group_dataset[t.rec_group]
    out = np.empty(len(t.rec_model), np.float32)
    for a in range(0, len(out), chunk):
        b = min(a + chunk, len(out))
        out[a:b] = np.einsum("nd,nd->n", m[t.rec_model[a:b]], d[rec_ds[a:b]])
    return out


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    """Rows of ``x`` projected on their top ``dims`` principal components (deterministic signs)."""
    x = np.asarray(x, np.float64)
    if x.shape[1] == 0 or dims <= 0:
        return np.zeros((len(x), 0))
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    vt = vt[:dims]
    vt *= np.where(vt[np.arange(len(vt)), np.abs(vt).argmax(1)] < 0, -1.0, 1.0)[:, None]
    return xc @ vt.T


def _top_codes(codes: np.ndarray, weight_codes: np.ndarray, keep: int) -> np.ndarray:
    """Remaps a categorical column to ``0..keep-1`` (the most frequent codes among
    ``weight_codes``, ties by code) with everything else -> ``keep`` ("other")."""
    n = int(max(codes.max(initial=0), weight_codes.max(initial=0))) + 1
    freq = np.bincount(weight_codes, minlength=n)
    order = np.lexsort((np.arange(n), -freq))
    top = order[: min(keep, n)]
    lut = np.full(n, keep, np.int64)
    lut[top] = np.arange(len(top))
    return lut[codes]


def metadata_features(
    stats: TrainStats, pca_dims: int = 16
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-record metadata features ``(X [N, F], categorical mask [F], names)``: log size,
    family, task, metric, modality and PCA-reduced model / dataset description embeddings."""
    t = stats.tables
    c = t.corpus
    max_cat = 254  # HistGradientBoosting wants category codes < max_bins (255)
    task = np.asarray(c["group_task"]).astype(np.int64)
    metric = np.asarray(c["group_metric"]).astype(np.int64)
    modality = np.asarray(c["dataset_modality"]).astype(np.int64)[t.group_dataset]
    model_cols: list[tuple[str, np.ndarray, bool]] = [
        ("log_params", log_params(stats), False),
        ("family", _top_codes(stats.family, stats.family[stats.t_model], max_cat), True),
    ]
    group_cols: list[tuple[str, np.ndarray, bool]] = [
        ("task", _top_codes(task, task[stats.t_group], max_cat), True),
        ("metric", _top_codes(metric, metric[stats.t_group], max_cat), True),
        ("modality", _top_codes(modality, modality[stats.t_group], max_cat), True),
    ]
    for i, col in enumerate(pca(t.model_desc, pca_dims).T):
        model_cols.append((f"model_desc_pc{i}", col, False))
    for i, col in enumerate(pca(t.dataset_desc, pca_dims)[t.group_dataset].T):
        group_cols.append((f"dataset_desc_pc{i}", col, False))
    x = np.concatenate(
        [np.stack([v for _, v, _ in model_cols], 1).astype(np.float64)[t.rec_model],
         np.stack([v for _, v, _ in group_cols], 1).astype(np.float64)[t.rec_group]], 1
    )  # fmt: skip
    cols = model_cols + group_cols
    return x, np.array([cat for _, _, cat in cols]), [n for n, _, _ in cols]


def fit_gbr(
    stats: TrainStats, seed: int = 0, pca_dims: int = 16, max_iter: int = 200
) -> np.ndarray:
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
    except ImportError as e:
        raise BaselineUnavailable(
            "the gbr baseline needs scikit-learn: pip install 'modellens-jax[eval]'"
        ) from e
    x, cat, _ = metadata_features(stats, pca_dims)
    reg = HistGradientBoostingRegressor(
        max_iter=max_iter,
        learning_rate=0.1,
        max_leaf_nodes=31,
        min_samples_leaf=20,
        l2_regularization=1.0,
        categorical_features=cat,
        early_stopping=False,
        random_state=seed,
    )
    reg.fit(x[stats.train], stats.t_z)
    return reg.predict(x).astype(np.float32)


def _gram(idx: np.ndarray, f: np.ndarray, n: int) -> np.ndarray:
    """Per-entity ``Σ f fᵀ`` over the rows of each entity: ``[n, k, k]`` via bincounts."""
    k = f.shape[1]
    g = np.empty((n, k, k))
    for i in range(k):
        for j in range(i, k):
            g[:, i, j] = g[:, j, i] = np.bincount(idx, f[:, i] * f[:, j], minlength=n)
    return g


def _rhs(idx: np.ndarray, f: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    return np.stack([np.bincount(idx, f[:, i] * y, minlength=n) for i in range(f.shape[1])], 1)


def als(
    stats: TrainStats, rank: int = 16, reg: float = 3.0, iters: int = 15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alternating least squares on the training z-scores: ``z ≈ b_m + u_m · v_g`` with L2
    penalty ``reg`` on ``[u_m, b_m]`` and ``v_g``. Returns (U [M, r], b [M], V [G, r])."""
    M, G = stats.num_models, stats.num_groups
    m, g, z = stats.t_model, stats.t_group, stats.t_z
    rng = np.random.default_rng(seed)
    v = rng.normal(0, 0.1, (G, rank))
    u = np.zeros((M, rank))
    b = np.zeros(M)
    eye_m, eye_g = reg * np.eye(rank + 1), reg * np.eye(rank)
    for _ in range(iters):
        f = np.concatenate([v[g], np.ones((len(g), 1))], 1)
        x = np.linalg.solve(_gram(m, f, M) + eye_m, _rhs(m, f, z, M)[..., None])[..., 0]
        u, b = x[:, :rank], x[:, rank]
        f = u[m]
        v = np.linalg.solve(_gram(g, f, G) + eye_g, _rhs(g, f, z - b[m], G)[..., None])[..., 0]
    return u, b, v


def fit_matrix_factorisation(stats: TrainStats, seed: int = 0, **kw) -> np.ndarray:
    u, b, v = als(stats, seed=seed, **kw)
    t = stats.tables
    rm, rg = t.rec_model, t.rec_group
    mf = b[rm] + np.einsum("nr,nr->n", u[rm], v[rg])
    seen = (stats.model_count[rm] > 0) & (stats.group_count[rg] > 0)
    return np.where(seen, mf, stats.competence[rm]).astype(np.float32)


LAMBDARANK_GRADES = 31  # relevance labels 0..30 from the within-group percentile of z


def relevance_grades(
    z: np.ndarray, group: np.ndarray, grades: int = LAMBDARANK_GRADES
) -> np.ndarray:
    """Integer labels ``0..grades-1`` per record: its z's percentile among the records of its
    group (ties share a grade), for LambdaRank's NDCG gains."""
    _, pct = competence.group_relative(np.asarray(z, np.float64), np.asarray(group), 0)
    return np.round(np.nan_to_num(pct, nan=0.5) * (grades - 1)).astype(np.int32)


def fit_ranker(
    x: np.ndarray, labels: np.ndarray, group: np.ndarray, *, seed: int = 0,
    n_estimators: int = 300,
):  # fmt: skip
    """A LightGBM LambdaRank model on rows ``x`` (contiguous per ``group``), deterministic."""
    try:
        import lightgbm
    except ImportError as e:
        raise BaselineUnavailable(
            "the lambdarank baseline needs lightgbm: pip install 'modellens-jax[eval]'"
        ) from e
    _, sizes = np.unique(group, return_counts=True)
    if np.any(np.diff(group) < 0):
        raise ValueError("ranker rows must be contiguous per group (sorted by group)")
    ranker = lightgbm.LGBMRanker(
        objective="lambdarank", n_estimators=n_estimators, learning_rate=0.05, num_leaves=31,
        min_child_samples=int(np.clip(len(x) // 100, 2, 20)),  # 20, less on tiny corpora
        colsample_bytree=0.8, reg_lambda=1.0,
        label_gain=list(range(LAMBDARANK_GRADES)), lambdarank_truncation_level=64,
        deterministic=True, force_row_wise=True, num_threads=1, random_state=seed, verbose=-1,
    )  # fmt: skip
    ranker.fit(x, labels, group=sizes)
    return ranker


def lambdarank_training_rows(
    stats: TrainStats, x: np.ndarray, x_cold: np.ndarray, seed: int = 0, cold_share: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, labels, query ids) the ranker learns from: every training group's training
    records, then the same groups again with a seeded ``cold_share`` of the models given their
    cold features (``competence.features(cold=True)``: no history, the family without them),
    so the ranker also learns how models without history rank."""
    tr = np.flatnonzero(stats.train)
    g = stats.tables.rec_group[tr].astype(np.int64)
    y = relevance_grades(stats.t_z, g)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    cold = rng.random(stats.num_models) < cold_share
    blank = cold[stats.tables.rec_model[tr]]
    x_mixed = np.where(blank[:, None], x_cold[tr], x[tr])
    G = stats.num_groups
    return np.concatenate([x[tr], x_mixed]), np.concatenate([y, y]), np.concatenate([g, g + G])


def fit_lambdarank(stats: TrainStats, seed: int = 0, **kw) -> np.ndarray:
    x = competence.features(stats.tables)
    x_cold = competence.features(stats.tables, cold=True)
    rows, labels, group = lambdarank_training_rows(stats, x, x_cold, seed)
    ranker = fit_ranker(rows, labels, group, seed=seed, **kw)
    return ranker.predict(x).astype(np.float32)


DESCRIPTIONS = {
    "random": "seeded uniform noise",
    "size": "log parameter count, bigger is better (unknown size = median)",
    "popularity": "number of training records of the model (proxy: the corpus has no "
    "download counts)",
    "family_mean": "mean training z-score of the model's family",
    "competence": "model's mean training z-score; family mean, then 0",
    "text_similarity": "cosine of dataset and model description embeddings",
    "gbr": "HistGradientBoostingRegressor of z from size, family, task, metric, modality, "
    "description PCA",
    "matrix_factorisation": "ALS (rank 16) on training z; falls back to competence",
    "lambdarank": "LightGBM LambdaRank on competence features (history, similar datasets, "
    "family, size and release relative to the group)",
}

_FITTERS: dict[str, Callable[..., np.ndarray]] = {
    "random": lambda s, seed: fit_random(s, seed),
    "size": lambda s, seed: fit_size(s),
    "popularity": lambda s, seed: fit_popularity(s),
    "family_mean": lambda s, seed: fit_family_mean(s),
    "competence": lambda s, seed: fit_competence(s),
    "text_similarity": lambda s, seed: fit_text_similarity(s),
    "gbr": lambda s, seed: fit_gbr(s, seed),
    "matrix_factorisation": lambda s, seed: fit_matrix_factorisation(s, seed),
    "lambdarank": lambda s, seed: fit_lambdarank(s, seed),
}


def parse_names(spec: str | Iterable[str]) -> list[str]:
    """``"all"``, ``"none"``/``""`` or a comma list -> baseline names (ValueError on unknown)."""
    if isinstance(spec, str):
        spec = spec.strip()
        if spec in ("", "none"):
            return []
        if spec == "all":
            return list(NAMES)
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    names = list(spec)
    bad = [n for n in names if n not in NAMES]
    if bad:
        raise ValueError(f"unknown baseline(s) {bad}: expected some of {', '.join(NAMES)}")
    return names


def fit(name: str, tables: pipeline.FeatureTables, *, seed: int = 0,
        stats: TrainStats | None = None) -> Baseline:  # fmt: skip
    """Fits one baseline on the training records of ``tables``."""
    if name not in _FITTERS:
        raise ValueError(f"unknown baseline {name!r}: expected one of {', '.join(NAMES)}")
    stats = stats or TrainStats(tables)
    t0 = time.perf_counter()
    scores = _FITTERS[name](stats, seed)
    return Baseline(name, np.asarray(scores, np.float32), DESCRIPTIONS[name],
                    time.perf_counter() - t0)  # fmt: skip


def fit_all(
    tables: pipeline.FeatureTables,
    names: str | Iterable[str] = "all",
    *,
    seed: int = 0,
    say: Callable[[str], None] = lambda s: None,
) -> tuple[dict[str, Baseline], dict[str, str]]:
    """Fits the named baselines; returns (fitted, {name: why skipped})."""
    stats = TrainStats(tables)
    fitted: dict[str, Baseline] = {}
    skipped: dict[str, str] = {}
    for name in parse_names(names):
        try:
            fitted[name] = fit(name, tables, seed=seed, stats=stats)
            say(f"baseline {name}: fit in {fitted[name].fit_seconds:.1f}s")
        except BaselineUnavailable as e:
            skipped[name] = str(e)
            say(f"baseline {name}: skipped ({e})")
    return fitted, skipped
