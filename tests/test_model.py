"""Tests of the ModelLens scorer: factorisation, ID dropout, switches, sizes, jit, sharding."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from modellens_jax import model as model_lib
from modellens_jax.data.batch import MODEL_KEYS
from modellens_jax.model import (
    BLOCK_NAMES,
    PAPER_SIZES,
    FeatureSizes,
    Scorer,
    param_counts,
    partition_specs,
)
from tests.batches import synthetic_batch

DESC = 12
SIZES = FeatureSizes(
    num_model_ids=20,
    name_buckets=50,
    num_size_buckets=23,
    num_families=7,
    num_dataset_ids=9,
    num_tasks=5,
    num_metrics=6,
    model_desc_dim=DESC,
    dataset_desc_dim=DESC,
    competence_dim=5,
)
SWITCHES = (
    "use_model_id",
    "use_model_name",
    "use_model_desc",
    "use_dataset_id",
    "use_dataset_desc",
    "use_size_feature",
    "use_size_prior",
    "use_family_prior",
    "use_release",
    "use_competence",
)


def forward_concatenated(self, batch, *, train: bool = False, key=None) -> dict:
    """Reference formulation of ``Scorer.__call__`` (``self``: the scorer): builds the per-record
    ``[R, L, in_dim]`` input and applies the whole first Linear. Same outputs (same key → same
    masks)."""
    keys = self._keys(train, key)
    mslot, gslot = batch["model_slot"], batch["group_slot"]
    if keys is not None:
        drop_m, drop_d = self.id_dropout_masks(keys[0], mslot.shape)
    else:
        drop_m = drop_d = jnp.zeros(mslot.shape, bool)
    models = {k: model_lib._take(jnp.asarray(batch[k]), mslot) for k in model_lib._model_keys(self)}
    groups = {k: model_lib._take(jnp.asarray(batch[k]), gslot) for k in model_lib._group_keys(self)}
    if self.use_model_id:
        models["model_id"] = jnp.where(drop_m, 0, models["model_id"])
    if self.use_dataset_id:
        groups["dataset_id"] = jnp.where(drop_d, 0, groups["dataset_id"])
    per_record: dict = {}
    per_record.update(self.model_features(models))
    per_record.update(self.context_features(groups))
    x = jnp.concatenate([per_record[f] for f in self.feature_dims], -1)
    pre = model_lib._matmul(x, self.first_layer_kernel(), self.dtype) + self.first.bias[...]
    prior = model_lib._take(self.model_prior(batch), mslot)
    key2 = None if keys is None else keys[1]
    m_pre = jnp.zeros_like(pre)
    for f in self.feature_dims:
        if f in model_lib.MODEL_SIDE:
            m_pre = m_pre + model_lib._matmul(per_record[f], self.first.kernels[f][...], self.dtype)
    inter = self._interaction(m_pre, pre - m_pre)
    if self.use_competence:
        pre = pre + self.competence_pre(batch["competence"])
    return self._trunk(pre, prior, train, key2, self.dropout_rate, inter)


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(
        dict(
            model_id_dim=16, name_dim=8, dataset_id_dim=8, task_dim=4, metric_dim=4, size_dim=4,
            family_dim=4, hidden_dim=16, dropout=0.1, model_id_dropout=0.1,
            dataset_id_dropout=0.1, init_temperature=1.0, compute_dtype="float32",
            interaction_dim=8, id_init_std=1.0, cold_model_rate=0.0,
            **dict.fromkeys(SWITCHES, True),
        )
    )  # fmt: skip
    c.update(overrides)
    return c


def make(seed: int = 0, **overrides) -> Scorer:
    """A tiny scorer; the interaction's zero-initialised context projection is drawn at
    random so every test exercises the bilinear term."""
    model = Scorer(tiny_config(**overrides), SIZES, rngs=nnx.Rngs(seed))
    if model.interaction_dim:
        q = model.interaction.context_proj
        q[...] = jax.random.normal(jax.random.key(seed + 1), q[...].shape)
    return model


def batch(seed: int = 0, **kw) -> dict[str, jax.Array]:
    return {
        k: jnp.asarray(v)
        for k, v in synthetic_batch(
            np.random.default_rng(seed), **{"competence_dim": SIZES.competence_dim, **kw}
        ).items()
    }


def param_paths(model: Scorer) -> set[str]:
    return {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}


COMBOS = {
    "all": {},
    "no_ids": dict(use_model_id=False, use_dataset_id=False),
    "semantic_only": dict(
        use_model_id=False, use_dataset_id=False, use_size_feature=False, use_size_prior=False,
        use_family_prior=False,
    ),
    "interaction_only": dict(
        use_model_name=False, use_model_desc=False, use_dataset_desc=False,
        use_size_feature=False, use_size_prior=False, use_family_prior=False,
    ),
    "structural_only": dict(
        use_model_id=False, use_model_name=False, use_model_desc=False, use_dataset_id=False,
        use_dataset_desc=False,
    ),
    "empty_model_side": dict(
        use_model_id=False, use_model_name=False, use_model_desc=False, use_size_feature=False,
        use_family_prior=False,
    ),
    "no_size_prior": dict(use_size_prior=False),
}  # fmt: skip


@pytest.mark.parametrize("combo", list(COMBOS))
def test_factorised_equals_concatenated(combo: str) -> None:
    model, b = make(**COMBOS[combo]), batch(1)
    fac, cat = model(b), forward_concatenated(model, b)
    for k in ("score", "prior", "residual", "z_hat"):
        assert fac[k].shape == b["mask"].shape and fac[k].dtype == jnp.float32
        np.testing.assert_allclose(fac[k], cat[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_factorised_equals_concatenated_in_training() -> None:
    # Same key → same ID-dropout and dropout masks in both formulations.
    model, b = make(model_id_dropout=0.4, dataset_id_dropout=0.3, dropout=0.2), batch(2)
    key = jax.random.key(7)
    fac = model(b, train=True, key=key)
    cat = forward_concatenated(model, b, train=True, key=key)
    for k in ("score", "residual", "z_hat"):
        np.testing.assert_allclose(fac[k], cat[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert not np.allclose(fac["score"], model(b)["score"])


def test_first_layer_kernel_is_the_upstream_linear() -> None:
    model = make()
    assert model.in_dim == 8 + 16 + DESC + 8 + DESC + (4 + 2) + 4 + 4 + 4 + 2
    assert model.first_layer_kernel().shape == (model.in_dim, 16)
    assert list(model.feature_dims) == [
        "name", "model_id", "model_desc", "dataset_id", "dataset_desc", "size", "family", "task",
        "metric", "release",
    ]  # fmt: skip


def test_id_dropout_rates_and_independence() -> None:
    """Each of 20k records is classified, from its score alone, into one of the four
    (model ID, dataset ID) ∈ {own, [UNK]}² cases; rates and independence are checked."""
    p_m, p_d, n = 0.2, 0.3, 20_000
    model = make(model_id_dropout=p_m, dataset_id_dropout=p_d, dropout=0.0)
    rows, cols = 100, 200
    b = batch(3, rows=rows, list_size=cols, num_models=n, num_groups=n, pad_fraction=0.0)
    ids = np.random.default_rng(4)
    b["model_id"] = jnp.asarray(ids.integers(1, SIZES.num_model_ids, n), jnp.int32)
    b["dataset_id"] = jnp.asarray(ids.integers(1, SIZES.num_dataset_ids, n), jnp.int32)
    # One record per model and per group, so the slots enumerate the records.
    b["model_slot"] = jnp.arange(n, dtype=jnp.int32).reshape(rows, cols)
    b["group_slot"] = jnp.arange(n, dtype=jnp.int32).reshape(rows, cols)

    def eval_score(unk_model: bool, unk_data: bool) -> np.ndarray:
        bb = dict(b)
        if unk_model:
            bb["model_id"] = jnp.zeros_like(b["model_id"])
        if unk_data:
            bb["dataset_id"] = jnp.zeros_like(b["dataset_id"])
        return np.asarray(model(bb)["score"]).ravel()

    cases = [(m, d) for m in (False, True) for d in (False, True)]
    ref = np.stack([eval_score(m, d) for m, d in cases], -1)  # [n, 4]
    got = np.asarray(model(b, train=True, key=jax.random.key(11))["score"]).ravel()
    dist = np.abs(ref - got[:, None])
    assert dist.min(-1).max() < 1e-5  # every record matches one case
    which = dist.argmin(-1)
    drop_m = np.isin(which, [2, 3])
    drop_d = np.isin(which, [1, 3])

    def within_3se(hits: np.ndarray, p: float) -> None:
        se = np.sqrt(p * (1 - p) / hits.size)
        assert abs(hits.mean() - p) < 3 * se, (hits.mean(), p, se)

    within_3se(drop_m, p_m)
    within_3se(drop_d, p_d)
    within_3se(drop_m & drop_d, p_m * p_d)  # independent per record


def test_id_dropout_is_per_record_not_per_group() -> None:
    # synthetic_batch puts one group per row: its dataset ID must be [UNK] on some records only.
    model = make(model_id_dropout=0.0, dataset_id_dropout=0.5, dropout=0.0)
    b = batch(14, rows=8, list_size=64, pad_fraction=0.0)
    b["dataset_id"] = jnp.maximum(b["dataset_id"], 1)
    keep = np.asarray(model(b)["score"])
    unk = np.asarray(model(dict(b, dataset_id=jnp.zeros_like(b["dataset_id"])))["score"])
    got = np.asarray(model(b, train=True, key=jax.random.key(2))["score"])
    dropped = np.abs(got - unk) < np.abs(got - keep)
    assert np.minimum(np.abs(got - unk), np.abs(got - keep)).max() < 1e-5
    assert (dropped.any(1) & (~dropped).any(1)).all()


def test_determinism() -> None:
    model, b = make(model_id_dropout=0.5, dataset_id_dropout=0.5, dropout=0.3), batch(5)
    np.testing.assert_array_equal(model(b)["score"], model(b)["score"])
    k = jax.random.key(0)
    a1, a2 = model(b, train=True, key=k), model(b, train=True, key=k)
    for name in a1:
        np.testing.assert_array_equal(a1[name], a2[name])
    other = model(b, train=True, key=jax.random.key(1))
    assert not np.array_equal(a1["score"], other["score"])
    with pytest.raises(ValueError, match="key"):
        model(b, train=True)


@pytest.mark.parametrize(
    ("switch", "absent"),
    [
        ("use_model_id", ["model_id_embed/embedding", "first/kernels/model_id"]),
        ("use_model_name", ["name_embed/embedding", "first/kernels/name"]),
        ("use_model_desc", ["first/kernels/model_desc"]),
        ("use_dataset_id", ["dataset_id_embed/embedding", "first/kernels/dataset_id"]),
        ("use_dataset_desc", ["first/kernels/dataset_desc"]),
        ("use_size_feature", ["size_embed/embedding", "first/kernels/size"]),
        ("use_family_prior", ["family_embed/embedding", "first/kernels/family"]),
        ("use_release", ["first/kernels/release"]),
    ],
)
def test_disabled_feature_has_no_params(switch: str, absent: list[str]) -> None:
    on, off = param_paths(make()), param_paths(make(**{switch: False}))
    for path in absent:
        assert path in on and path not in off
    out = make(**{switch: False})(batch(6), train=True, key=jax.random.key(0))
    assert all(np.isfinite(v).all() for v in out.values())


def test_prior_switches() -> None:
    b = batch(7)
    for kw in (
        dict(use_size_prior=False, use_family_prior=False),
        dict(use_size_feature=False, use_family_prior=False),  # feature off forces prior off
    ):
        model = make(**kw)
        assert not any(p.startswith("prior") for p in param_paths(model))
        out = model(b)
        np.testing.assert_array_equal(out["prior"], 0.0)
        assert np.isfinite(out["score"]).all()
    # Size prior only: size_dim + (log-size, known) wide; family only: family_dim wide.
    assert make(use_family_prior=False).prior_hidden.kernel.shape == (6, 8)
    assert make(use_size_prior=False).prior_hidden.kernel.shape == (4, 8)
    assert make().prior_hidden.kernel.shape == (10, 8)
    assert np.abs(make()(b)["prior"]).max() > 0


def test_prior_depends_only_on_size_and_family() -> None:
    model, b = make(), batch(8)
    b2 = dict(b, model_id=b["model_id"][::-1], task=b["task"][::-1])
    np.testing.assert_array_equal(model(b)["prior"], model(b2)["prior"])


@pytest.mark.parametrize("temperature", [2.5, 1e-5])
def test_score_is_residual_plus_prior_over_temperature(temperature: float) -> None:
    model = make(init_temperature=temperature)
    out = model(batch(9))
    expected = (out["residual"] + out["prior"]) / max(temperature, 1e-3)
    np.testing.assert_allclose(out["score"], expected, rtol=1e-6, atol=0)


def test_name_embedding_is_masked_mean() -> None:
    model = make()
    table = model.name_embed.embedding[...]
    tokens = jnp.asarray([[3, 5, 7], [1, 2, 4], [-1, 60, 0]], jnp.int32)
    mask = jnp.asarray([[True, False, True], [False, False, False], [False, False, False]])
    out = model.name_embedding(tokens, mask)
    np.testing.assert_allclose(out[0], (table[3] + table[7]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(out[1:], 0.0)  # empty names → zero (even invalid padding)


@pytest.mark.parametrize("combo", ["all", "no_ids", "structural_only"])
def test_param_counts_match_actual(combo: str) -> None:
    cfg = tiny_config(**COMBOS[combo])
    counts = param_counts(cfg, SIZES)
    params = nnx.state(Scorer(cfg, SIZES, rngs=nnx.Rngs(0)), nnx.Param)
    assert counts["total"] == sum(x.size for x in jax.tree.leaves(params))
    by_block = dict.fromkeys(BLOCK_NAMES, 0)
    prefix = {
        "model_id": "model_id_embed", "name": "name_embed", "dataset_id": "dataset_id_embed",
        "task": "task_embed", "metric": "metric_embed", "size": "size_embed",
        "family": "family_embed", "temperature": "temperature",
        "competence": "competence_proj",
    }  # fmt: skip
    for path, var in nnx.to_flat_state(params):
        head = path[0]
        block = next((b for b, p in prefix.items() if p == head), None)
        block = block or {"first": "backbone", "second": "backbone", "interaction": "backbone",
                          "rank_head": "heads", "point_head": "heads"}.get(head, "prior")  # fmt: skip
        by_block[block] += var.size
    assert {b: counts[b] for b in BLOCK_NAMES} == by_block


def test_param_counts_at_paper_dims() -> None:
    cfg = tiny_config(
        model_id_dim=1536, name_dim=512, dataset_id_dim=256, task_dim=256, metric_dim=256,
        size_dim=64, family_dim=64, hidden_dim=512,
    )  # fmt: skip
    c = param_counts(cfg, PAPER_SIZES)
    # in_dim 6016 (method.md §4) + (log-size, known) + (release, known); the interaction adds
    # two [512, k] maps.
    first, second, interaction = 6020 * 512 + 512, 512 * 512 + 512, 2 * 512 * 8
    assert c["backbone"] == first + second + interaction
    assert c["model_id"] == 47_001 * 1536 and c["name"] == 10_000 * 512
    assert c["prior"] == (128 + 2) * 256 + 256 + 256 + 1
    assert 83.0e6 < c["total"] < 83.8e6


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_jit_functional_matches_eager(compute_dtype: str) -> None:
    model, b = make(compute_dtype=compute_dtype), batch(10)
    graphdef, state = nnx.split(model)

    @functools.partial(jax.jit, static_argnames="train")
    def forward(state, batch, key, train):
        return nnx.merge(graphdef, state)(batch, train=train, key=key)

    key = jax.random.key(3)
    for train in (False, True):
        jitted, eager = forward(state, b, key, train), model(b, train=train, key=key)
        for k in jitted:
            assert jitted[k].dtype == jnp.float32
            np.testing.assert_allclose(jitted[k], eager[k], rtol=1e-5, atol=1e-5)

    @jax.jit
    def grads(state, batch, key):
        def loss(state):
            out = nnx.merge(graphdef, state)(batch, train=True, key=key)
            return jnp.sum(jnp.where(batch["mask"], out["score"] ** 2 + out["z_hat"] ** 2, 0.0))

        return jax.grad(loss)(state)

    g = grads(nnx.state(model, nnx.Param), b, key)
    leaves = jax.tree.leaves(g)
    assert all(x.dtype == jnp.float32 and np.isfinite(x).all() for x in leaves)
    assert np.abs(g["temperature"][...]) > 0


def test_bfloat16_close_to_float32() -> None:
    b = batch(11)
    f32 = make(compute_dtype="float32")(b)["score"]
    bf16 = make(compute_dtype="bfloat16")(b)["score"]  # same seed → same float32 params
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(bf16, f32, atol=0.05 * float(np.abs(f32).max()))
    with pytest.raises(ValueError, match="compute_dtype"):
        make(compute_dtype="float16")


def test_serving_score_all_matches_records() -> None:
    model, b = make(), batch(12)
    models = {k: b[k] for k in MODEL_KEYS}
    groups = {k: b[k] for k in ("dataset_id", "dataset_desc", "task", "metric")}
    rng = np.random.default_rng(12)
    comp = rng.normal(size=(6, 16, SIZES.competence_dim)).astype(np.float32)
    comp[rng.random(comp.shape) < 0.3] = np.nan  # unknown features
    b = dict(b, competence=jnp.asarray(comp[b["group_slot"], b["model_slot"]]))
    table = model.score_all(models, groups, jnp.asarray(comp))  # [S, U]
    assert table["score"].shape == (6, 16)
    rec = model(b)
    gathered = table["score"][b["group_slot"], b["model_slot"]]
    np.testing.assert_allclose(gathered, rec["score"], rtol=1e-5, atol=1e-5)


def test_partition_specs_shard_id_tables_and_forward_matches() -> None:
    model, b = make(), batch(13)
    graphdef, state = nnx.split(model)
    specs = partition_specs(state)
    assert specs["model_id_embed"]["embedding"].get_value() == P(None, "model")
    assert specs["dataset_id_embed"]["embedding"].get_value() == P(None, "model")
    assert specs["second"]["kernel"].get_value() == P()
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    sharded = jax.device_put(state, shardings)
    emb = sharded["model_id_embed"]["embedding"][...]
    assert emb.sharding.spec == P(None, "model")
    fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)["score"])
    np.testing.assert_allclose(fwd(sharded, b), model(b)["score"], rtol=1e-5, atol=1e-5)


def test_interaction_is_the_bilinear_form_of_the_two_sides() -> None:
    model, b = make(), batch(15)
    models = {k: b[k] for k in MODEL_KEYS}
    groups = {k: b[k] for k in ("dataset_id", "dataset_desc", "task", "metric")}
    m, c = np.asarray(model.model_side(models)), np.asarray(model.context_side(groups))
    p = np.asarray(model.interaction.model_proj[...])
    q = np.asarray(model.interaction.context_proj[...])
    k = p.shape[1]
    inter = np.zeros((c.shape[0], m.shape[0]))
    for s in range(c.shape[0]):  # slow, obvious loops
        for u in range(m.shape[0]):
            inter[s, u] = sum((m[u] @ p[:, j]) * (c[s] @ q[:, j]) for j in range(k)) / np.sqrt(k)
    without = make(interaction_dim=0)  # same seed: same first layer, trunk and heads
    for name in (
        "first",
        "second",
        "rank_head",
        "point_head",
        "prior_hidden",
        "prior_out",
        "competence_proj",
    ):
        nnx.update(getattr(without, name), nnx.state(getattr(model, name)))
    comp = jnp.zeros((c.shape[0], m.shape[0], SIZES.competence_dim))
    got = (
        model.score_all(models, groups, comp)["residual"]
        - without.score_all(models, groups, comp)["residual"]
    )
    np.testing.assert_allclose(got, inter, rtol=1e-4, atol=1e-4)
    assert np.abs(inter).max() > 0.1


def test_interaction_starts_at_zero_and_off_has_no_params() -> None:
    model = Scorer(tiny_config(), SIZES, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(model.interaction.context_proj[...], 0.0)
    assert not any(p.startswith("interaction") for p in param_paths(make(interaction_dim=0)))
    assert {"interaction/model_proj", "interaction/context_proj"} <= param_paths(model)


def test_log_size_orders_models_inside_a_size_bucket() -> None:
    """Models identical but for their log-size, all in one size bucket: the model side moves
    along the log-size row of the size kernel, in the order of the sizes (not just "changes")."""
    model, b = make(), batch(16)
    u = b["model_id"].shape[0]
    same = {k: jnp.repeat(b[k][:1], u, axis=0) for k in MODEL_KEYS}
    log_size = jnp.linspace(-1.0, 2.0, u)
    same.update(size_bucket=jnp.full((u,), 5, b["size_bucket"].dtype), log_size=log_size)
    side = np.asarray(model.model_side(dict(b, **same)))
    size_dim = model.size_embed.embedding[...].shape[1]
    w = np.asarray(model.first.kernels["size"][...])[size_dim]  # the log-size input's row
    np.testing.assert_allclose(
        side - side[:1], (np.asarray(log_size) - log_size[0])[:, None] * w, rtol=1e-5, atol=1e-5
    )
    proj = side @ w
    assert np.all(np.diff(proj) > 0), proj  # bigger model, further along w
    assert np.argsort(proj).tolist() == np.argsort(np.asarray(log_size)).tolist()
    # Unknown size (bucket 0): log-size is ignored.
    b0 = dict(b, size_bucket=jnp.zeros_like(b["size_bucket"]))
    np.testing.assert_array_equal(
        model.model_side(b0), model.model_side(dict(b0, log_size=b0["log_size"] + 1.0))
    )


def test_dropout_rescales_kept_units_by_one_over_keep() -> None:
    """Kills the mutant "dropout without the 1/keep rescale" (model.py ``_dropout``): checked
    against a numpy expectation, not against another path through ``_dropout``. Kept units are
    ``x / keep``, dropped ones 0, the kept fraction is ``keep`` and the mean is preserved."""
    from modellens_jax.model import _dropout

    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, (64, 256)).astype(np.float32)  # no zeros: kept <=> nonzero
    for rate in (0.25, 0.6):
        keep = 1.0 - rate
        out = np.asarray(jax.jit(_dropout)(jnp.asarray(x), jnp.float32(rate), jax.random.key(3)))
        kept = out != 0
        expect = np.where(kept, x / np.float32(keep), 0.0)
        np.testing.assert_allclose(out, expect, rtol=1e-6)
        n = x.size
        assert abs(kept.mean() - keep) < 4 * np.sqrt(keep * (1 - keep) / n)
        assert abs(out.mean() / x.mean() - 1) < 0.03
    np.testing.assert_array_equal(np.asarray(_dropout(jnp.asarray(x), 0.0, jax.random.key(0))), x)
    xb = jnp.asarray(x, jnp.bfloat16)  # the activation dtype is kept
    assert _dropout(xb, 0.5, jax.random.key(1)).dtype == jnp.bfloat16


def test_dropout_mask_does_not_depend_on_x64() -> None:
    """Kills model.x__dropout__mutmut_5 / _7 (the rate as ``jnp.asarray(rate, None)``): under
    x64 a Python-float rate would become a float64 keep probability, and ``bernoulli`` would
    draw its uniforms in float64, i.e. another mask for the same key. The keep probability is
    float32 either way, so a run's dropout masks do not change with ``jax_enable_x64``."""
    from modellens_jax.model import _dropout

    x = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, (32, 128)).astype(np.float32))
    for rate in (0.1, 0.3, 0.5):
        plain = np.asarray(_dropout(x, rate, jax.random.key(7)))
        with jax.enable_x64(True):
            wide = _dropout(x, rate, jax.random.key(7))
        assert wide.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(wide), plain)


def test_cold_episodes_withhold_id_and_history_of_whole_models() -> None:
    """``cold_model_rate=1``: in training every model is new for all its records, i.e. the
    forward equals inference on the batch with every model ID set to [UNK] and the competence
    features replaced by their cold version; rate 0 leaves training equal to inference (no
    dropout anywhere); the competence input changes the scores."""
    b = batch(21)
    off = dict(dropout=0.0, model_id_dropout=0.0, dataset_id_dropout=0.0)
    cold = make(cold_model_rate=1.0, **off)
    got = cold(b, train=True, key=jax.random.key(3))["score"]
    b_cold = dict(b, model_id=jnp.zeros_like(b["model_id"]), competence=b["competence_cold"])
    want = cold(b_cold)["score"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    warm = make(cold_model_rate=0.0, **off)
    np.testing.assert_allclose(
        warm(b, train=True, key=jax.random.key(3))["score"], warm(b)["score"], rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(warm(b)["score"], warm(b_cold)["score"], atol=1e-3)
    with pytest.raises(ValueError, match="cold_model_rate"):
        make(cold_model_rate=1.5)
