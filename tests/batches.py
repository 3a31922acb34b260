"""Random batches that obey the batch contract (padding, ties, one group per row), for tests."""

from __future__ import annotations

import numpy as np

from modellens_jax.data import batch as batch_lib


def synthetic_batch(
    rng: np.random.Generator,
    *,
    rows: int = 4,
    list_size: int = 8,
    num_models: int = 16,
    num_groups: int = 6,
    name_tokens: int = 4,
    desc_dim: int = 12,
    vocab: dict[str, int] | None = None,
    pad_fraction: float = 0.25,
    ties: bool = True,
    competence_dim: int = 0,
) -> dict[str, np.ndarray]:
    """A random batch obeying the contract (padding, ties, one group per row), for tests."""
    v = {
        "model_id": 20,
        "name_buckets": 50,
        "size": 23,
        "family": 7,
        "dataset_id": 9,
        "task": 5,
        "metric": 6,
    }
    v.update(vocab or {})
    mask = rng.random((rows, list_size)) > pad_fraction
    mask[:, :2] = True
    values = rng.normal(size=(rows, list_size)).astype(np.float32)
    if ties:
        values = np.round(values * 2) / 2
    values = np.where(mask, values, 0.0).astype(np.float32)
    cnt = mask.sum(1, keepdims=True)
    mean = (values * mask).sum(1, keepdims=True) / cnt
    std = np.sqrt((((values - mean) * mask) ** 2).sum(1, keepdims=True) / cnt)
    z = np.where(mask, (values - mean) / np.maximum(std, 1e-6), 0.0).astype(np.float32)
    size_bucket = rng.integers(0, v["size"], num_models).astype(np.int32)
    extra = {}
    for k in batch_lib.COMPETENCE_KEYS if competence_dim else ():
        x = rng.normal(size=(rows, list_size, competence_dim)).astype(np.float32)
        extra[k] = np.where(rng.random(x.shape) < 0.3, np.nan, x).astype(np.float32)
    return extra | {
        "mask": mask,
        "segment": mask.astype(np.int32),
        "model_slot": rng.integers(0, num_models, (rows, list_size)).astype(np.int32),
        "group_slot": np.repeat(rng.integers(0, num_groups, (rows, 1)), list_size, 1).astype(
            np.int32
        ),
        "value": values,
        "z": z,
        "model_id": rng.integers(0, v["model_id"], num_models).astype(np.int32),
        "name_tokens": rng.integers(0, v["name_buckets"], (num_models, name_tokens)).astype(
            np.int32
        ),
        "name_mask": rng.random((num_models, name_tokens)) > 0.3,
        "model_desc": rng.normal(size=(num_models, desc_dim)).astype(np.float32),
        "size_bucket": size_bucket,
        "log_size": np.where(size_bucket > 0, rng.uniform(-3, 3, num_models), 0).astype(np.float32),
        "release": np.where(
            rng.random(num_models) < 0.8, rng.uniform(18, 26, num_models), 0
        ).astype(np.float32),
        "family": rng.integers(0, v["family"], num_models).astype(np.int32),
        "dataset_id": rng.integers(0, v["dataset_id"], num_groups).astype(np.int32),
        "dataset_desc": rng.normal(size=(num_groups, desc_dim)).astype(np.float32),
        "task": rng.integers(0, v["task"], num_groups).astype(np.int32),
        "metric": rng.integers(0, v["metric"], num_groups).astype(np.int32),
    }
