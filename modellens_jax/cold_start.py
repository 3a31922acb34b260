"""The cold-start prior: how a model without a learned ID (a new model) is expected to rank on a
task, from its size and its family — learned from the training records, weighted on validation.

The ranking losses only ever see models that have training records, so the network alone says
little about how new models order among themselves. Two regularities it underweights: new
models arrive as families of graded sizes, and on most tasks the bigger one wins (not on all:
on some leaderboards small specialised models win); and a new release of a family ranks about
where the family's earlier models ranked on that task. So the prior is **task-conditioned**
and learned, not a hand-set bonus:

1. ``effects``: per task, the within-group least-squares effect on the z-score of
   ``log10(params)`` and of "size unknown" (an unknown size counts as the task's mean known
   size), and each family's mean z-score on the task, over the training records. Each task's
   values are shrunk toward its modality's, those toward the global ones (a family's toward its
   mean over all tasks, that toward 0), by a pseudo-count ``shrink`` (ridge toward the parent).
2. ``fit``: the prior added to the scores of models without an ID is
   ``scale · (β_size[task] · log10(params) + β_unknown[task] · [size unknown])
   + family_scale · family_z[task, family]``, in score units. The two weights (multiples of the
   scorer's own within-group score spread, 0 included: no prior) and ``shrink`` are chosen by
   the training command on the run's validation split by a coordinate search, as the values
   with the best validation judge over the settings that have new models.

Models with a learned ID get nothing. Evaluation (``evaluate.ModelScorer``) and serving
(``serving.recommender``) add the same prior with :meth:`ColdStart.prior` from the same stored
values (``WORKDIR/cold_start.json``, the bundle's ``cold_start/*`` tables).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modellens_jax import fsutil

FILE = "cold_start.json"
COLD_SETTINGS = ("unseen_model", "unseen_both")  # validation settings with models without an ID


MODEL_KEYS = ("model_id", "size_bucket", "log_size", "family")  # the model inputs it reads


@dataclasses.dataclass(frozen=True)
class ColdStart:
    """Fitted prior: per task (row 0 = an unknown task: the global effects) the size and
    unknown-size coefficients ``slope [T, 2]`` (z per decade, z for unknown), the log size an
    unknown size stands for ``impute [T]``, each family's z ``family [T, F]`` (column 0, the
    unknown family: 0), and their weights ``scale`` / ``family_scale`` (score units per z)."""

    slope: np.ndarray
    impute: np.ndarray
    family: np.ndarray
    scale: float
    family_scale: float = 0.0
    shrink: float = 0.0
    fit: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # how it was chosen

    def to_json(self) -> dict[str, Any]:
        return {
            "scale": float(self.scale),
            "family_scale": float(self.family_scale),
            "shrink": float(self.shrink),
            "slope": np.asarray(self.slope, np.float64).tolist(),
            "impute": np.asarray(self.impute, np.float64).tolist(),
            "family": np.asarray(self.family, np.float64).tolist(),
            "fit": dict(self.fit),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ColdStart:
        slope = np.asarray(doc["slope"], np.float64).reshape(-1, 2)
        impute = np.asarray(doc["impute"], np.float64).reshape(-1)
        family = np.asarray(doc["family"], np.float64)
        if family.ndim != 2 or not len(impute) == len(slope) == len(family):
            raise ValueError(f"{len(slope)} slope, {len(impute)} impute and {len(family)} "
                             "family rows: one per task expected")  # fmt: skip
        return cls(slope, impute, family, float(doc["scale"]), float(doc["family_scale"]),
                   float(doc.get("shrink", 0.0)), dict(doc.get("fit", {})))  # fmt: skip

    def weighted(self, scale: float, family_scale: float) -> ColdStart:
        return dataclasses.replace(self, scale=float(scale), family_scale=float(family_scale))

    def prior(
        self, model_id: np.ndarray, size_bucket: np.ndarray, log_size: np.ndarray,
        family: np.ndarray, task: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """Per (model, task) pair (broadcast): the prior in score units; 0 for models with a
        learned ID (``model_id > 0``) and everywhere when both weights are 0."""
        shape = np.broadcast_shapes(np.shape(model_id), np.shape(task))
        if self.scale == 0.0 and self.family_scale == 0.0:
            return np.zeros(shape, np.float64)
        t = np.asarray(task, np.int64)
        t = np.where((t > 0) & (t < len(self.slope)), t, 0)  # a task the fit never saw: row 0
        f = np.asarray(family, np.int64)
        f = np.where((f > 0) & (f < self.family.shape[1]), f, 0)  # a new family: 0
        known = np.asarray(size_bucket) > 0
        x = np.where(known, np.asarray(log_size, np.float64), self.impute[t])
        z = self.slope[t, 0] * x + self.slope[t, 1] * (~known)
        p = self.scale * z + self.family_scale * self.family[t, f]
        return np.where(np.asarray(model_id) == 0, p, 0.0)

    def batch_prior(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """:meth:`prior` of every record slot of an evaluation batch ``[R, L]`` (0 on padding)."""
        ms, gs = np.asarray(batch["model_slot"]), np.asarray(batch["group_slot"])
        p = self.prior(*(np.asarray(batch[k])[ms] for k in MODEL_KEYS),
                       np.asarray(batch["task"])[gs])  # fmt: skip
        return np.where(np.asarray(batch["mask"], bool), p, 0.0).astype(np.float32)


# --- learning the effects from the training records -------------------------------------------
@dataclasses.dataclass(frozen=True)
class Moments:
    """Within-group normal equations of ``z ~ [log size, unknown]`` per task, per modality and
    overall: ``A [.., 2, 2]``, ``b [.., 2]``; ``task_modality [T]``; mean known log size and its
    count per task / modality / overall (for the imputation)."""

    A_task: np.ndarray
    b_task: np.ndarray
    A_mod: np.ndarray
    b_mod: np.ndarray
    task_modality: np.ndarray
    impute: np.ndarray  # [T] the log size an unknown size counts as (row 0: overall mean)
    family_sum: np.ndarray  # [T, F] Σ z of the family's training records on the task
    family_n: np.ndarray  # [T, F] their count


def _group_center(v: np.ndarray, g: np.ndarray, n: int) -> np.ndarray:
    cnt = np.bincount(g, minlength=n)
    return v - (np.bincount(g, v, minlength=n) / np.maximum(cnt, 1))[g]


def moments(tables: Any) -> Moments:
    """:class:`Moments` of the training records of ``tables`` (``pipeline.FeatureTables``)."""
    from modellens_jax.data import splits

    c = tables.corpus
    train = np.asarray(c["rec_split"]) == splits.TRAIN
    m = np.asarray(tables.rec_model, np.int64)[train]
    g = np.asarray(tables.rec_group, np.int64)[train]
    z = np.asarray(tables.rec_z, np.float64)[train]
    G = len(np.asarray(c["group_task"]))
    T = len(c.vocab["tasks"])
    Mo = max(len(c.vocab["modalities"]), 1)
    group_task = np.asarray(c["group_task"], np.int64)
    group_mod = np.asarray(c["dataset_modality"], np.int64)[np.asarray(c["group_dataset"])]
    known = np.asarray(tables.model_cols["size_bucket"])[m] > 0
    ls = np.asarray(tables.model_cols["log_size"], np.float64)[m]
    t = group_task[g]
    tm = _task_modality(group_task, group_mod, T, Mo)
    impute = _impute(np.bincount(t, np.where(known, ls, 0.0), minlength=T),
                     np.bincount(t, known.astype(np.float64), minlength=T), tm)  # fmt: skip
    x = np.where(known, ls, impute[t])
    u = (~known).astype(np.float64)
    f = np.stack([_group_center(x, g, G), _group_center(u, g, G)], 1)
    zc = _group_center(z, g, G)
    A_task = np.zeros((T, 2, 2))
    b_task = np.zeros((T, 2))
    for i in range(2):
        b_task[:, i] = np.bincount(t, f[:, i] * zc, minlength=T)
        for j in range(2):
            A_task[:, i, j] = np.bincount(t, f[:, i] * f[:, j], minlength=T)
    A_mod = np.zeros((Mo, 2, 2))
    b_mod = np.zeros((Mo, 2))
    np.add.at(A_mod, tm, A_task)
    np.add.at(b_mod, tm, b_task)
    fam = np.asarray(c["model_family"], np.int64)
    F = int(fam.max(initial=0)) + 1
    fs, fn = np.zeros((T, F)), np.zeros((T, F))
    np.add.at(fs, (t, fam[m]), z)
    np.add.at(fn, (t, fam[m]), 1.0)
    return Moments(A_task, b_task, A_mod, b_mod, tm, impute, fs, fn)


def _task_modality(group_task: np.ndarray, group_mod: np.ndarray, T: int, Mo: int) -> np.ndarray:
    """Each task's modality: the most frequent among its groups (0 for a task without any)."""
    counts = np.zeros((T, Mo), np.int64)
    np.add.at(counts, (group_task, group_mod), 1)
    return counts.argmax(1)


def _impute(size_sum: np.ndarray, size_n: np.ndarray, tm: np.ndarray) -> np.ndarray:
    """Per task: the mean known log size of its training records; its modality's, then the
    overall mean, where it has none; row 0 (no task) the overall mean."""
    overall = size_sum.sum() / max(size_n.sum(), 1.0)
    Mo = int(tm.max(initial=0)) + 1
    mod_sum, mod_n = np.bincount(tm, size_sum, Mo), np.bincount(tm, size_n, Mo)
    mod_mean = np.where(mod_n > 0, mod_sum / np.maximum(mod_n, 1.0), overall)
    out = np.where(size_n > 0, size_sum / np.maximum(size_n, 1.0), mod_mean[tm])
    out[0] = overall
    return out


def effects(mo: Moments, shrink: float) -> ColdStart:
    """The unweighted prior of :class:`Moments` (both weights 0): :func:`size_effects` and
    :func:`family_effects` with pseudo-count ``shrink``."""
    return ColdStart(size_effects(mo, shrink), mo.impute, family_effects(mo, shrink), 0.0, 0.0,
                     float(shrink))  # fmt: skip


def family_effects(mo: Moments, shrink: float) -> np.ndarray:
    """``family [T, F]``: each family's mean training z on each task, shrunk toward its mean
    over all tasks (itself shrunk toward 0) by ``shrink`` records; row 0 (no task) the
    all-task means, column 0 (no family) 0."""
    k = max(float(shrink), 1e-9)
    overall = mo.family_sum.sum(0) / (mo.family_n.sum(0) + k)
    out = (mo.family_sum + k * overall) / (mo.family_n + k)
    out[0] = overall
    out[:, 0] = 0.0
    return out


def size_effects(mo: Moments, shrink: float) -> np.ndarray:
    """``slope [T, 2]`` from :class:`Moments`: global least squares (a tiny ridge keeps it
    defined without unknown sizes), modality and task shrunk toward their parent by ``shrink``;
    row 0 (no task) holds the global coefficients."""
    eye = np.eye(2)
    A, b = mo.A_task.sum(0), mo.b_task.sum(0)
    glob = np.linalg.solve(A + 1e-6 * (1.0 + np.trace(A)) * eye, b)
    k = max(float(shrink), 1e-9)
    mod = np.linalg.solve(mo.A_mod + k * eye, (mo.b_mod + k * glob)[..., None])[..., 0]
    rhs = mo.b_task + k * mod[mo.task_modality]
    task = np.linalg.solve(mo.A_task + k * eye, rhs[..., None])[..., 0]
    task[0] = glob
    return task


# --- fitting the weight on validation ---------------------------------------------------------
Validate = Callable[[Callable[[dict], np.ndarray], Any], "tuple[float, dict]"]


class _Replay:
    """The scorer plus a candidate prior, scoring every batch once: later passes over the same
    batches replay the cached scores (the grid search re-ranks the same records many times)."""

    def __init__(self, scorer: Callable[[dict], np.ndarray]):
        self.scorer = scorer
        self.cold: ColdStart | None = None
        self.cache: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self.i = 0

    def rewind(self, cold: ColdStart | None) -> _Replay:
        self.i, self.cold = 0, cold
        return self

    def __call__(self, batch: dict) -> np.ndarray:
        if self.i == len(self.cache):
            keys = ("value", "mask", "model_slot", "group_slot", "task", *MODEL_KEYS)
            b = {k: np.asarray(batch[k]) for k in keys}
            self.cache.append((np.asarray(self.scorer(batch), np.float32), b))
        base, b = self.cache[self.i]
        if not np.array_equal(b["value"], batch["value"]):
            raise AssertionError("cold-start fit: the batches changed between passes")
        self.i += 1
        return base if self.cold is None else base + self.cold.batch_prior(b)


def score_spread(scores: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Mean over rows (groups) of the standard deviation of their real scores: the unit of the
    prior's scale (1.0 without any row of two records)."""
    sds = []
    for s, mk in zip(scores, masks):
        mk = np.asarray(mk, bool)
        n = mk.sum(1)
        mu = np.where(mk, s, 0).sum(1) / np.maximum(n, 1)
        var = np.where(mk, (s - mu[:, None]) ** 2, 0).sum(1) / np.maximum(n, 1)
        sds.extend(np.sqrt(var[n > 1]).tolist())
    return float(np.mean(sds)) if sds else 1.0


def fit(
    scorer: Callable[[dict], np.ndarray],
    tables: Any,
    validate: Validate,
    *,
    scales: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    family_scales: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0),
    shrinks: Sequence[float] = (3.0, 30.0),
) -> ColdStart:
    """Learns the effects from the training records of ``tables`` and picks the weights and
    ``shrink`` by ``validate(scorer, tables) -> (judge, per-setting results)`` (the caller's
    validation over :data:`COLD_SETTINGS`). Per ``shrink``, a coordinate search from no prior:
    the best size weight (0 or one of ``scales``), then the best family weight given it (0 or
    one of ``family_scales``), then the size weight again given that; the best judge wins (ties:
    the earlier point, so no prior beats an equal one). Weights are multiples of the scorer's
    within-group score spread on those records, stored in score units; every point tried and
    its validation figure is in ``fit``."""
    mo = moments(tables)
    replay = _Replay(scorer)
    base, _ = validate(replay.rewind(None), tables)  # scores every batch once
    unit = score_spread([c[0] for c in replay.cache], [c[1]["mask"] for c in replay.cache])
    grid: list[dict[str, Any]] = [{"scale": 0.0, "family_scale": 0.0, "shrink": None,
                                   "judge": base}]  # fmt: skip
    best = (base, 0.0, 0.0, shrinks[0] if shrinks else 3.0)
    for shrink in shrinks:
        unweighted, seen = effects(mo, shrink), {(0.0, 0.0): base}

        def judge(a: float, f: float, unweighted=unweighted, seen=seen, shrink=shrink) -> float:
            if (a, f) not in seen:
                v, _ = validate(replay.rewind(unweighted.weighted(a * unit, f * unit)), tables)
                seen[(a, f)] = v
                grid.append({"scale": a, "family_scale": f, "shrink": shrink, "judge": v})
            return seen[(a, f)]

        a = _argmax(scales, lambda x: judge(x, 0.0))
        f = _argmax(family_scales, lambda x, a=a: judge(a, x))
        a = _argmax(scales, lambda x, f=f: judge(x, f))
        v = judge(a, f)
        if np.isfinite(v) and (not np.isfinite(best[0]) or v > best[0]):
            best = (v, a, f, shrink)
    v, a, f, shrink = best
    info = {"unit": unit, "scale_multiple": a, "family_scale_multiple": f, "validation": v,
            "validation_without": base, "grid": grid}  # fmt: skip
    return dataclasses.replace(effects(mo, shrink).weighted(a * unit, f * unit), fit=info)


def _argmax(values: Sequence[float], at: Callable[[float], float]) -> float:
    """The ``x`` of ``(0, *values)`` with the largest finite ``at(x)`` (the first on ties)."""
    top, arg = -np.inf, 0.0
    for x in (0.0, *values):
        v = at(x)
        if np.isfinite(v) and v > top:
            top, arg = v, x
    return arg


def grids(config: Any) -> dict[str, tuple[float, ...]]:
    """:func:`fit`'s grids from a run config's ``cold_start`` section."""
    c = config.cold_start
    return {"scales": tuple(c.scales), "family_scales": tuple(c.family_scales),
            "shrinks": tuple(c.shrinks)}  # fmt: skip


def describe(cs: ColdStart) -> str:
    """One line: the chosen weights and what they did on validation."""
    f = cs.fit
    return (f"size weight {f.get('scale_multiple', 0):g} x spread, family weight "
            f"{f.get('family_scale_multiple', 0):g} x spread, shrink {cs.shrink:g}; validation "
            f"judge on new models {f.get('validation_without', float('nan')):.4f} -> "
            f"{f.get('validation', float('nan')):.4f}")  # fmt: skip


# --- the run directory ------------------------------------------------------------------------
def save(workdir: str | Path, cs: ColdStart) -> Path:
    """Writes ``WORKDIR/cold_start.json`` atomically."""
    path = Path(workdir) / FILE
    return fsutil.write_atomic(path, lambda f: f.write(json.dumps(cs.to_json(), indent=1)))


def load(workdir: str | Path) -> ColdStart | None:
    """The run's fitted prior, or None (a run trained before the prior was fitted, or with
    ``cold_start.fit`` off)."""
    path = Path(workdir) / FILE
    if not path.is_file():
        return None
    try:
        return ColdStart.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a cold-start prior ({e})") from e
