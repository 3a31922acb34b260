"""A synthetic compiled corpus at a chosen scale and shape, for benchmarks.

Shape follows the real corpora: leaderboard "suites" each own a pool of models (heavy-tailed pool
sizes, overlapping pools) and a share of the groups; a group evaluates part of its suite's pool,
so group sizes are heavy-tailed and a model appears in many groups; values = model quality +
noise. Written through the same ``corpus.write_corpus`` as real data, so the real pipeline reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modellens_jax.data import corpus, schema, splits

PAPER_SCALE = {"models": 47_000, "datasets": 9_600, "records": 1_590_000, "tasks": 300,
               "metrics": 600, "families": 400, "desc_dim": 1536}  # fmt: skip


def make_corpus(
    out: Path,
    *,
    models: int,
    datasets: int,
    records: int,
    tasks: int = 300,
    metrics: int = 600,
    families: int = 400,
    suites: int = 300,
    seed: int = 0,
    name_buckets: int = 10_000,
    max_name_tokens: int = 16,
) -> corpus.Corpus:
    """Writes (or reuses, if present with the same shape) a synthetic corpus at ``out``."""
    out = Path(out)
    if (out / "manifest.json").exists():
        c = corpus.load_corpus(out)
        if c.manifest["report"].get("synthetic") == [models, datasets, records, suites, seed]:
            return c
    rng = np.random.default_rng(seed)
    g = datasets  # one group per dataset
    # Leaderboard structure: suites (benchmarks/leaderboards) own a pool of models and a set of
    # groups; a group evaluates part of its suite's pool. Pool sizes and suite popularity are
    # heavy-tailed; pools overlap (a model sits on several leaderboards).
    n_suites = max(1, min(g, suites))
    share = np.exp(rng.normal(0, 1.3, n_suites))
    cuts = np.r_[0, np.cumsum(share / share.sum() * models)].round().astype(np.int64)
    perm = rng.permutation(models)
    pools = []
    for s in range(n_suites):
        own = perm[cuts[s] : cuts[s + 1]]
        extra = rng.choice(models, size=int(0.2 * len(own)), replace=False)
        pools.append(np.unique(np.r_[own, extra]))
    suite = rng.choice(n_suites, size=g, p=share / share.sum())
    suite[:n_suites] = np.arange(n_suites)  # every pool is used
    sizes = np.exp(rng.normal(np.log(records / g) - 0.9, 1.35, g))
    pool_len = np.array([len(pools[s]) for s in suite])
    for _ in range(20):  # rescale towards the record budget under the pool-size caps
        sizes = np.clip(sizes * records / np.minimum(sizes, pool_len).sum(), 2, None)
    sizes = np.clip(np.minimum(np.round(sizes), pool_len), 2, models).astype(np.int64)
    rec_group, rec_model = [], []
    pool_weights: dict[int, np.ndarray] = {}  # inside a pool, a few models are evaluated everywhere
    for gi, n in enumerate(sizes):
        pool = pools[suite[gi]]
        w = pool_weights.setdefault(suite[gi], _zipf(len(pool)))
        m = rng.choice(pool, size=int(n), replace=False, p=w)
        rec_group.append(np.full(len(m), gi, np.int32))
        rec_model.append(m.astype(np.int32))
    rec_group = np.concatenate(rec_group)
    rec_model = np.concatenate(rec_model)
    quality = rng.normal(size=models)
    value = quality[rec_model] + 0.7 * rng.normal(size=len(rec_model))
    order = np.lexsort((rec_model, -value, rec_group))
    rec_group, rec_model, value = rec_group[order], rec_model[order], value[order]
    n = len(rec_group)
    split = np.where(rng.random(n) < 0.1, splits.VAL, splits.TRAIN).astype(np.int8)
    cnt = np.bincount(rec_group, minlength=g)
    mean = np.bincount(rec_group, value, g) / cnt
    std = np.sqrt(np.bincount(rec_group, (value - mean[rec_group]) ** 2, g) / cnt)
    z = (value - mean[rec_group]) / np.maximum(std[rec_group], 1e-6)
    names = [f"org{i % 500}/synth-{i}-b{i % 7}" for i in range(models)]
    tok, tmask = schema.name_token_array(names, name_buckets, max_name_tokens)
    params = np.exp(rng.normal(0, 2, models))
    arrays = {
        "rec_group": rec_group,
        "rec_model": rec_model,
        "rec_value": value.astype(np.float32),
        "rec_raw_value": value.astype(np.float32),
        "rec_z": z.astype(np.float32),
        "rec_split": split,
        "rec_setting": np.zeros(n, np.int8),
        "rec_source": np.ones(n, np.int16),
        "group_offsets": np.r_[0, np.cumsum(cnt)].astype(np.int64),
        "group_dataset": np.arange(g, dtype=np.int32),
        "group_task": rng.integers(1, tasks + 1, g).astype(np.int32),
        "group_metric": rng.integers(1, metrics + 1, g).astype(np.int32),
        "model_id": np.arange(1, models + 1, dtype=np.int32),
        "model_family": rng.integers(1, families + 1, models).astype(np.int32),
        "model_params": params.astype(np.float32),
        "model_size_bucket": schema.size_bucket(params, (0.001, 0.01, 0.1, 1, 10, 100, 1000)),
        "model_release_day": np.full(models, -1, np.int32),
        "model_name_tokens": tok,
        "model_name_mask": tmask,
        "dataset_id": np.arange(1, g + 1, dtype=np.int32),
        "dataset_modality": np.ones(g, np.int32),
    }
    vocab = {
        "models": names,
        "datasets": [f"dataset-{i}" for i in range(g)],
        "tasks": [schema.UNK, *(f"task-{i}" for i in range(tasks))],
        "metrics": [schema.UNK, *(f"metric-{i}" for i in range(metrics))],
        "families": [schema.UNK, *(f"family-{i}" for i in range(families))],
        "modalities": [schema.UNK, "text"],
        "sources": [schema.UNK, "synthetic"],
    }
    texts = {"models": names, "datasets": vocab["datasets"]}
    report = {"records": n, "synthetic": [models, datasets, records, suites, seed],
              "group_size": {"median": float(np.median(cnt)), "max": int(cnt.max())}}  # fmt: skip
    corpus.write_corpus(corpus.Compiled(arrays, vocab, texts, report), out, config={})
    return corpus.load_corpus(out)


def _zipf(n: int, a: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** a
    return w / w.sum()


def random_embeddings(n: int, dim: int, seed: int, dtype=np.float16) -> np.ndarray:
    """Unit-norm random description embeddings."""
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)
