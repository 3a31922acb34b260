"""One validator for every command that takes a training config (``train``, ``main``,
``members``, the sweep's points): types, ranges, enumerations and the mesh divisibility, checked
before anything is read, compiled or written. A bad value raises :class:`ConfigError` naming the
key (the commands print it as one line and exit 2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_collections

# Validation metrics (evaluate.aggregate's keys, higher is better) the judge may name.
JUDGES = ("weighted_tau", "weighted_tau_pairs", "weighted_tau_ref", "weighted_tau_ref_pairs",
          "ndcg@1", "ndcg@10", "hit@1", "hit@10", "recall@1", "recall@10")  # fmt: skip


class ConfigError(ValueError):
    """A config value of the wrong type, out of range or not one of the choices."""


def _get(c: ml_collections.ConfigDict, key: str) -> Any:
    node: Any = c
    for part in key.split("."):
        if part not in node:
            raise ConfigError(f"config {key}: missing")
        node = node[part]
    return node


def _has(c: ml_collections.ConfigDict, key: str) -> bool:
    node: Any = c
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def _validate_partial(config: ml_collections.ConfigDict, judges) -> ml_collections.ConfigDict:
    """The per-key checks of :func:`validate` for the keys ``config`` has."""
    keys = [*INT_POSITIVE, *INT_NONNEG, *(f"model.{d}" for d in DIMS), *POSITIVE, *NONNEG,
            *RATES, *CHOICES]  # fmt: skip
    present = {k for k in keys if _has(config, k)}
    if present == set(keys) and all(_has(config, k) for k in ("mesh.data", "mesh.model")):
        return validate(config, judges=judges, check_mesh=False)
    sub = ml_collections.ConfigDict()
    for k in present:
        node = sub
        *path, last = k.split(".")
        for part in path:
            if part not in node:
                node[part] = ml_collections.ConfigDict()
            node = node[part]
        node[last] = _get(config, k)
    _check_keys(sub, present, judges)
    return config


def _num(key: str, v: Any, integer: bool) -> float:
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or (integer and not isinstance(v, int))
    ):
        raise ConfigError(f"config {key}={v!r}: expected {'an integer' if integer else 'a number'}")
    if not math.isfinite(v):
        raise ConfigError(f"config {key}={v!r}: expected a finite number")
    return v


INT_POSITIVE = ("input.groups_per_batch", "input.list_size", "train.steps",
                "train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_latest",
                "model.hidden_dim", "embed.batch_size", "embed.max_length",
                "data.name_buckets", "data.max_name_tokens", "ensemble.members")  # fmt: skip
INT_NONNEG = ("input.max_models_per_batch", "input.max_groups_per_batch", "input.blocks",
              "input.worker_count",
              "input.prefetch", "train.keep_best", "train.early_stop_patience",
              "optim.warmup_steps", "seed", "model.interaction_dim")  # fmt: skip
DIMS = ("model_id_dim", "name_dim", "dataset_id_dim", "task_dim", "metric_dim", "size_dim",
        "family_dim")  # fmt: skip
POSITIVE = ("model.init_temperature",)
MAX_MEMBERS = 16  # seed-ensemble members trained in one program (ensemble.members)
# learning_rate 0 is allowed (a frozen run: tests use it to hold the judge constant).
NONNEG = ("optim.learning_rate", "optim.weight_decay", "optim.clip_norm", "loss.bpr_weight_cap", "model.id_init_std",
          "loss.weights.listwise", "loss.weights.pairwise",
          "loss.weights.pointwise")  # fmt: skip
RATES = ("model.dropout", "model.model_id_dropout", "model.dataset_id_dropout",
         "model.cold_model_rate")  # fmt: skip
CHOICES = {
    "optim.decay": ("cosine", "constant"),
    "loss.pl_reduction": ("mean", "sum"),
    "loss.pl_ties": ("stable", "drop_tied"),
    "loss.bpr_weighting": ("none", "zgap"),
    "model.compute_dtype": ("float32", "bfloat16"),
    "data.format": ("auto", "leaderboard", "modellens"),
    "data.bad_rows": ("error", "skip"),
    "embed.dtype": ("float16", "float32", "bfloat16"),
    "train.judge": JUDGES,
}


def _check_keys(config: ml_collections.ConfigDict, only: set[str] | None, judges) -> None:
    """Types, ranges and choices of each key (``only``: just those keys)."""
    checks: list[tuple[tuple[str, ...], Callable[[str, Any], None]]] = []

    def positive_int(k, v):
        if _num(k, v, True) <= 0:
            raise ConfigError(f"config {k}={v!r}: must be > 0")

    def nonneg_int(k, v):
        if _num(k, v, True) < 0:
            raise ConfigError(f"config {k}={v!r}: must be >= 0")

    def positive(k, v):
        if _num(k, v, False) <= 0:
            raise ConfigError(f"config {k}={v!r}: must be > 0")

    def nonneg(k, v):
        if _num(k, v, False) < 0:
            raise ConfigError(f"config {k}={v!r}: must be >= 0")

    def rate(k, v):
        if not 0 <= _num(k, v, False) < 1:
            raise ConfigError(f"config {k}={v!r}: must be in [0, 1)")

    checks += [(INT_POSITIVE, positive_int), (INT_NONNEG, nonneg_int),
               (tuple(f"model.{d}" for d in DIMS), nonneg_int), (POSITIVE, positive),
               (NONNEG, nonneg), (RATES, rate)]  # fmt: skip
    for keys, check in checks:
        for k in keys:
            if only is None or k in only:
                check(k, _get(config, k))
    choices = dict(CHOICES)
    if judges is not None:
        choices["train.judge"] = judges
    for k, allowed in choices.items():
        if only is not None and k not in only:
            continue
        v = _get(config, k)
        if v not in allowed:
            raise ConfigError(f"config {k}={v!r}: expected one of {', '.join(allowed)}")


UPDATE_INT_POSITIVE = ("updates.steps", "updates.eval_every")
UPDATE_INT_NONNEG = ("updates.warmup_steps", "updates.seed")


def validate_update(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The ``updates`` section (``modellens_jax.update``): budget, schedule and replay share."""
    for k in UPDATE_INT_POSITIVE + UPDATE_INT_NONNEG:
        v, positive = _num(k, _get(config, k), True), k in UPDATE_INT_POSITIVE
        if v < (1 if positive else 0):
            raise ConfigError(f"config {k}={v!r}: must be {'> 0' if positive else '>= 0'}")
    lr = _num("updates.learning_rate", _get(config, "updates.learning_rate"), False)
    if lr < 0:
        raise ConfigError(f"config updates.learning_rate={lr!r}: must be >= 0")
    r = _num("updates.replay", _get(config, "updates.replay"), False)
    if not 0 <= r <= 1:
        raise ConfigError(f"config updates.replay={r!r}: must be in [0, 1]")
    return config


def validate(
    config: ml_collections.ConfigDict,
    *,
    device_count: int | None = None,
    process_count: int = 1,
    judges: tuple[str, ...] | None = None,
    check_mesh: bool = True,
    partial: bool = False,
) -> ml_collections.ConfigDict:
    """Raises :class:`ConfigError` for the first bad value; returns ``config``.

    ``device_count`` (default: ``jax.device_count()``, imported only then) resolves
    ``mesh.data=-1`` for the divisibility checks; ``check_mesh=False`` skips those (a sweep
    planning runs for devices it cannot see; the trainer checks again). ``partial=True``
    checks only the keys present (a sweep over a config file that is not a training config)."""
    if partial:
        return _validate_partial(config, judges)
    _check_keys(config, None, judges)
    if _has(config, "updates"):
        validate_update(config)
    w = config.loss.weights
    if not any(float(w[k]) > 0 for k in ("listwise", "pairwise", "pointwise")):
        raise ConfigError("config loss.weights: at least one of listwise, pairwise, pointwise "
                          "must be > 0")  # fmt: skip
    n_members = int(config.ensemble.members)
    if n_members > MAX_MEMBERS:
        raise ConfigError(f"config ensemble.members={n_members}: at most {MAX_MEMBERS} (every "
                          "member's state is held in one program)")  # fmt: skip
    # The data section (splits, overrides) has its own checks, shared with ``prepare``.
    from modellens_jax.data import corpus

    try:
        corpus.validate_data_config(config.data)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    md, mm = _get(config, "mesh.data"), _get(config, "mesh.model")
    _num("mesh.data", md, True), _num("mesh.model", mm, True)
    if mm <= 0:
        raise ConfigError(f"config mesh.model={mm!r}: must be > 0")
    if md == 0 or md < -1:
        raise ConfigError(f"config mesh.data={md!r}: must be -1 (all remaining devices) or > 0")
    if not check_mesh:
        return config
    if device_count is None:
        import jax

        device_count, process_count = jax.device_count(), jax.process_count()
    if device_count % mm:
        raise ConfigError(f"config mesh.model={mm}: does not divide the {device_count} devices")
    n_data = device_count // mm if md == -1 else md
    if md != -1 and md * mm > device_count:
        raise ConfigError(
            f"config mesh.data={md} x mesh.model={mm}: more than the {device_count} devices"
        )
    rows = int(config.input.groups_per_batch)
    if rows % n_data or rows % process_count:
        raise ConfigError(
            f"config input.groups_per_batch={rows}: must be divisible by the mesh data axis "
            f"({n_data}) and the process count ({process_count})"
        )
    mm_models = int(config.input.max_models_per_batch)
    if mm_models and (mm_models % n_data or mm_models % process_count):
        raise ConfigError(
            f"config input.max_models_per_batch={mm_models}: must be divisible by the mesh data "
            f"axis ({n_data}) and the process count ({process_count})"
        )
    blocks = int(config.input.get("blocks", 1)) or n_data
    for key, n in (("groups_per_batch", rows), ("max_models_per_batch", mm_models),
                   ("max_groups_per_batch", int(config.input.max_groups_per_batch))):  # fmt: skip
        if n % blocks:
            raise ConfigError(
                f"config input.{key}={n}: must be divisible by the batch's blocks ({blocks}: "
                "input.blocks, 0 = the mesh data axis)"
            )
    if blocks > 1 and blocks % process_count:
        raise ConfigError(
            f"config input.blocks={blocks}: must be divisible by the process count "
            f"({process_count})"
        )
    mg = int(config.input.max_groups_per_batch)
    if mg % process_count:
        raise ConfigError(
            f"config input.max_groups_per_batch={mg}: must be divisible by the process count "
            f"({process_count})"
        )
    return config
