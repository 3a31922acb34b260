"""The ModelLens scorer (structural prior + residual MLP over model and context views) in Flax NNX, with a factorised first layer.

The upstream network concatenates, per record, ``name ‖ model-id ‖ model-desc ‖ dataset-id ‖
dataset-desc ‖ size ‖ family ‖ task ‖ metric`` (in_dim 6016 at the paper's dims) and applies
``Linear(in_dim → hidden)``. That first layer is a sum of per-feature products, so we split its
kernel by feature and compute the **model side** (name, model id, model desc, size, family,
release) once per distinct model of the batch ``[U, H]`` and the **context side** (dataset id,
dataset desc, task, metric, plus the bias) once per group ``[S, H]``; a record's pre-activation is
``Mside[model_slot] + Cside[group_slot]``. The concatenated ``[R, L, in_dim]`` input is never
built in training or serving; the tests' ``forward_concatenated`` computes it only to document
and test the equivalence.

ID dropout (training only): each record independently replaces its model ID and,
independently, its dataset ID by [UNK] (row 0). In the factorised form this is a per-record
select between ``rest[u] + W_id·e_id(u)`` and ``rest[u] + W_id·e_unk``, the ID projection taken
once per distinct model (``Scorer._side_records``).

Beyond the paper (each switchable; ``configs/ablations.py`` has a preset per switch):

- **interaction** (``interaction_dim``): ``⟨P·Mside, Q·Cside⟩/√k`` added to the residual, the
  matrix-factorisation inductive bias an MLP over concatenated inputs learns poorly;
- **continuous size**: the size input is the bucket embedding ‖ (log10 size, known), so sizes
  inside one bucket are ordered; **release date** (``use_release``): (years from 2024, known);
- **competence features** (``use_competence``): per record, the model's record on the other
  training groups of its task, source, modality and dataset, on the most similar training
  datasets, its family's, and its size and release relative to the group's other models
  (:mod:`modellens_jax.data.competence`), projected into the first layer per record
  (``competence_proj``; NaN = unknown → value 0, known flag 0);
- **cold-start episodes** (``cold_model_rate``): in training, a share of each batch's models is
  treated as new for all its records (ID → [UNK], competence → its cold version: no history,
  the family without the model), so how models without history rank is learned from the data;
- categorical embedding rows no training record uses start (and stay) at zero (``zero_rows``),
  so a held-out family, task or name token is a neutral input rather than a random draw.

Parameter paths (``/``-joined; ``PARAMETERS`` maps their first component to a block)::

    model_id_embed/embedding     [num_model_ids, model_id_dim]   (row 0 = [UNK])
    name_embed/embedding         [name_buckets, name_dim]
    dataset_id_embed/embedding   [num_dataset_ids, dataset_id_dim] (row 0 = [UNK])
    task_embed/embedding, metric_embed/embedding, size_embed/embedding, family_embed/embedding
    first/kernels/<feature>      [feature_dim, hidden]  (the first Linear, split by feature)
    first/bias                   [hidden]
    second/kernel, second/bias   [hidden, hidden], [hidden]
    interaction/{model,context}_proj  [hidden, k]   bilinear term (Q starts at zero)
    rank_head/{kernel,bias}      [hidden, 1], [1]   residual score s_res
    point_head/{kernel,bias}     [hidden, 1], [1]   pointwise z-score ẑ
    prior_hidden/{kernel,bias}   [size_dim + 2 + family_dim, hidden/2]
    prior_out/{kernel,bias}      [hidden/2, 1]
    temperature                  []                 score = (s_res + s_prior) / max(T, 1e-3)

Disabled features create no parameters. Initialisation: embedding tables N(0, 1) as upstream's
torch ``nn.Embedding`` (the name table is xavier-uniform, as upstream), except the model- and
dataset-ID tables, N(0, ``id_init_std``²): upstream's 1.0 leaves a model with few records an ID
that is mostly its random draw, a noise offset that only ensembling averages away; linear layers use Flax's
lecun-normal kernels and zero biases, and the split first-layer kernel is drawn as one
``[in_dim, hidden]`` matrix so its fan-in is the full ``in_dim`` of the upstream Linear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from modellens_jax.data import features

Array = jax.Array

# Feature order of the concatenated input (the upstream Linear's); the split first-layer kernel follows it.
FEATURE_ORDER = (
    "name",
    "model_id",
    "model_desc",
    "dataset_id",
    "dataset_desc",
    "size",
    "family",
    "task",
    "metric",
    "release",
)
MODEL_SIDE = ("name", "model_id", "model_desc", "size", "family", "release")
CONTEXT_SIDE = ("dataset_id", "dataset_desc", "task", "metric")
MIN_TEMPERATURE = 1e-3
SIZE_SCALARS = 2  # (log10 size, known) appended to the size bucket embedding

# The one table of the scorer's parameters: module (first path component) -> (block of the
# parameter table, batch key of its row IDs for the three big ID/token tables, else None). The ID
# tables (72M, 5M and 2.5M parameters at the paper's dims) split their **columns** over the
# mesh's "model" axis, so a row gather stays local to each shard and AdamW moments follow the
# split (row sharding would also divide memory but make every lookup a cross-shard gather), and
# the sparse optimizer updates only the rows a batch touches.
PARAMETERS: dict[str, tuple[str, str | None]] = {
    "model_id_embed": ("model_id", "model_id"),
    "name_embed": ("name", "name_tokens"),
    "dataset_id_embed": ("dataset_id", "dataset_id"),
    "task_embed": ("task", None),
    "metric_embed": ("metric", None),
    "size_embed": ("size", None),
    "family_embed": ("family", None),
    "first": ("backbone", None),
    "second": ("backbone", None),
    "rank_head": ("heads", None),
    "point_head": ("heads", None),
    "interaction": ("backbone", None),
    "prior_hidden": ("prior", None),
    "prior_out": ("prior", None),
    "temperature": ("temperature", None),
    "competence_proj": ("competence", None),
}
BLOCK_NAMES = tuple(dict.fromkeys(block for block, _ in PARAMETERS.values()))
ID_TABLES = {module: ids for module, (_, ids) in PARAMETERS.items() if ids}
TABLE_SPEC = P(None, "model")


@dataclasses.dataclass(frozen=True)
class FeatureSizes:
    """Vocabulary sizes and frozen-embedding widths the scorer's tables are built for.

    ID vocabularies include row 0 = [UNK]; ``num_size_buckets`` includes 0 = unknown size and
    ``num_families`` includes 0 = [UNK] family.
    """

    num_model_ids: int
    name_buckets: int
    num_size_buckets: int
    num_families: int
    num_dataset_ids: int
    num_tasks: int
    num_metrics: int
    model_desc_dim: int
    dataset_desc_dim: int
    competence_dim: int = 0  # per-record competence features (0 = the batch carries none)


def _compute_dtype(name: str) -> jnp.dtype:
    if name == "float32":
        return jnp.dtype(jnp.float32)
    if name == "bfloat16":
        return jnp.dtype(jnp.bfloat16)
    raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {name!r}")


def _matmul(x: Array, kernel: Array, dtype: jnp.dtype) -> Array:
    """``x @ kernel`` with operands cast to ``dtype`` and a float32 result."""
    return jnp.dot(x.astype(dtype), kernel.astype(dtype), preferred_element_type=jnp.float32)


def _dense(layer: nnx.Linear, x: Array, dtype: jnp.dtype) -> Array:
    return _matmul(x, layer.kernel[...], dtype) + layer.bias[...]


def _take(x: Array, idx: Array, blocks: int = 1) -> Array:
    """Gathers rows of ``x`` by slot; clipped so padded slots never produce NaN. With
    ``blocks`` > 1 (a batch of shard-local blocks, ``data/batch.py``) the gather is batched over
    the blocks, so a data-sharded batch gathers on each shard without communication."""
    if blocks == 1:
        return jnp.take(x, idx, axis=0, mode="clip")
    n = x.shape[0] // blocks
    local = idx.reshape(blocks, -1, *idx.shape[1:])
    local = local - (jnp.arange(blocks, dtype=idx.dtype) * n).reshape(-1, *[1] * idx.ndim)
    out = jax.vmap(lambda a, i: jnp.take(a, i, axis=0, mode="clip"))(
        x.reshape(blocks, n, *x.shape[1:]), local
    )
    return out.reshape(*idx.shape, *x.shape[1:])


def _dropout(x: Array, rate: Any, key: Array) -> Array:
    """Inverted dropout with a possibly traced rate (rate 0 keeps everything)."""
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask = jax.random.bernoulli(key, keep, x.shape)
    return jnp.where(mask, x / jnp.maximum(keep, 1e-6), 0.0).astype(x.dtype)


def _embed_table(num: int, dim: int, rngs: nnx.Rngs, std: float = 1.0) -> nnx.Embed:
    return nnx.Embed(num, dim, embedding_init=nnx.initializers.normal(stddev=std), rngs=rngs)


class _SplitDense(nnx.Module):
    """The first Linear(in_dim → hidden), its kernel stored as one row block per feature."""

    def __init__(self, dims: Mapping[str, int], hidden: int, *, rngs: nnx.Rngs):
        names = [f for f in FEATURE_ORDER if f in dims]
        in_dim = sum(dims[f] for f in names)
        full = nnx.initializers.lecun_normal()(rngs.params(), (in_dim, hidden), jnp.float32)
        kernels, start = {}, 0
        for f in names:
            kernels[f] = nnx.Param(full[start : start + dims[f]])
            start += dims[f]
        self.kernels = nnx.Dict(kernels)
        self.bias = nnx.Param(jnp.zeros((hidden,), jnp.float32))


class _Interaction(nnx.Module):
    """Bilinear model × context term ``⟨P·m, Q·c⟩ / √k`` on the two first-layer halves.

    An MLP over the concatenated input learns dot-product interactions poorly (Rendle et al.,
    2020); this term gives the scorer matrix factorisation's inductive bias (ID × ID) and a
    context-dependent slope for every model-side feature (e.g. log-size), and stays factorised:
    serving projects each cached side once. ``Q`` starts at zero, so the term starts at zero.
    """

    def __init__(self, hidden: int, dim: int, *, rngs: nnx.Rngs):
        self.model_proj = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (hidden, dim)))
        self.context_proj = nnx.Param(jnp.zeros((hidden, dim), jnp.float32))
        self.scale = 1.0 / float(dim) ** 0.5

    def project(self, mside: Array, cside: Array, dtype: jnp.dtype) -> tuple[Array, Array]:
        """Both sides in the interaction space, ``[..., k]`` each."""
        return (
            _matmul(mside, self.model_proj[...], dtype) * self.scale,
            _matmul(cside, self.context_proj[...], dtype),
        )


class Scorer(nnx.Module):
    """ModelLens scorer: residual backbone score plus a size/family prior, over a temperature.

    ``config`` is ``config.model`` (or any object with those attributes); ``sizes`` fixes the
    table shapes. Call it on a batch obeying :mod:`modellens_jax.data.batch`.
    """

    def __init__(self, config: Any, sizes: FeatureSizes, *, rngs: nnx.Rngs):
        c = config
        self.hidden_dim = int(c.hidden_dim)
        self.dtype = _compute_dtype(str(c.compute_dtype))
        self.dropout_rate = float(c.dropout)
        self.model_id_dropout = float(c.model_id_dropout) if c.use_model_id else 0.0
        self.dataset_id_dropout = float(c.dataset_id_dropout) if c.use_dataset_id else 0.0
        self.use_model_id = bool(c.use_model_id)
        self.use_model_name = bool(c.use_model_name)
        self.use_model_desc = bool(c.use_model_desc)
        self.use_dataset_id = bool(c.use_dataset_id)
        self.use_dataset_desc = bool(c.use_dataset_desc)
        self.use_size_feature = bool(c.use_size_feature)
        # Family is one switch for backbone and prior (the "no_family" ablation drops both).
        self.use_family = bool(c.use_family_prior)
        self.use_size_prior = bool(c.use_size_prior) and self.use_size_feature
        for name, p in (("model", self.model_id_dropout), ("dataset", self.dataset_id_dropout)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}_id_dropout must be in [0, 1], got {p}")

        dims: dict[str, int] = {"task": int(c.task_dim), "metric": int(c.metric_dim)}
        if self.use_model_name:
            dims["name"] = int(c.name_dim)
            self.name_embed = nnx.Embed(
                sizes.name_buckets,
                int(c.name_dim),
                embedding_init=nnx.initializers.xavier_uniform(),
                rngs=rngs,
            )
        if self.use_model_id:
            dims["model_id"] = int(c.model_id_dim)
            self.model_id_embed = _embed_table(
                sizes.num_model_ids, int(c.model_id_dim), rngs, float(c.id_init_std)
            )
        if self.use_model_desc:
            dims["model_desc"] = int(sizes.model_desc_dim)
        if self.use_dataset_id:
            dims["dataset_id"] = int(c.dataset_id_dim)
            self.dataset_id_embed = _embed_table(
                sizes.num_dataset_ids, int(c.dataset_id_dim), rngs, float(c.id_init_std)
            )
        if self.use_dataset_desc:
            dims["dataset_desc"] = int(sizes.dataset_desc_dim)
        if self.use_size_feature:
            dims["size"] = int(c.size_dim) + SIZE_SCALARS
            self.size_embed = _embed_table(sizes.num_size_buckets, int(c.size_dim), rngs)
        self.use_release = bool(c.use_release)
        if self.use_release:
            dims["release"] = 2
        if self.use_family:
            dims["family"] = int(c.family_dim)
            self.family_embed = _embed_table(sizes.num_families, int(c.family_dim), rngs)
        self.task_embed = _embed_table(sizes.num_tasks, int(c.task_dim), rngs)
        self.metric_embed = _embed_table(sizes.num_metrics, int(c.metric_dim), rngs)
        self.feature_dims = {f: dims[f] for f in FEATURE_ORDER if f in dims}

        h = self.hidden_dim
        self.first = _SplitDense(self.feature_dims, h, rngs=rngs)
        self.second = nnx.Linear(h, h, rngs=rngs)
        self.rank_head = nnx.Linear(h, 1, rngs=rngs)
        self.point_head = nnx.Linear(h, 1, rngs=rngs)
        self.interaction_dim = int(c.interaction_dim)
        if self.interaction_dim > 0:
            self.interaction = _Interaction(h, self.interaction_dim, rngs=rngs)

        prior_in = (int(c.size_dim) + SIZE_SCALARS if self.use_size_prior else 0) + (
            int(c.family_dim) if self.use_family else 0
        )
        self.has_prior = prior_in > 0
        if self.has_prior:
            self.prior_hidden = nnx.Linear(prior_in, h // 2, rngs=rngs)
            self.prior_out = nnx.Linear(h // 2, 1, rngs=rngs)
        self.temperature = nnx.Param(jnp.asarray(float(c.init_temperature), jnp.float32))
        self.use_competence = bool(c.use_competence) and sizes.competence_dim > 0
        self.competence_dim = int(sizes.competence_dim) if self.use_competence else 0
        self.cold_model_rate = float(c.cold_model_rate) if self.use_competence else 0.0
        if not 0.0 <= self.cold_model_rate <= 1.0:
            raise ValueError(f"cold_model_rate must be in [0, 1], got {self.cold_model_rate}")
        if self.use_competence:
            # values (NaN -> 0) and known flags of each competence feature -> hidden
            self.competence_proj = nnx.Linear(
                2 * sizes.competence_dim, h, use_bias=False, rngs=rngs
            )

    # ----------------------------------------------------------------------------- features
    @property
    def in_dim(self) -> int:
        """Width of the (never materialised) concatenated input."""
        return sum(self.feature_dims.values())

    def name_embedding(self, tokens: Array, mask: Array) -> Array:
        """Masked mean of hashed name-token embeddings ``[..., T] → [..., name_dim]``; empty → 0."""
        w = mask.astype(jnp.float32)
        emb = self.name_embed(jnp.where(mask, tokens, 0))
        total = jnp.einsum("...t,...td->...d", w, emb)
        return total / jnp.maximum(w.sum(-1, keepdims=True), 1.0)

    def size_features(self, models: Mapping[str, Array]) -> Array:
        """Size bucket embedding ‖ (log10 size, known) ``[..., size_dim + 2]``: the bucket learns
        any shape, the continuous log-size gives order and resolution inside a bucket."""
        known = (models["size_bucket"] > 0).astype(jnp.float32)
        log_size = jnp.asarray(models["log_size"], jnp.float32) * known
        return jnp.concatenate(
            [self.size_embed(models["size_bucket"]), log_size[..., None], known[..., None]], -1
        )

    def release_features(self, models: Mapping[str, Array]) -> Array:
        """(years from 2024 / 2, known) ``[..., 2]`` of the release date (0, 0 when unknown)."""
        r = jnp.asarray(models["release"], jnp.float32)
        known = (r > 0).astype(jnp.float32)
        return jnp.stack([(r - 24.0) / 2.0 * known, known], -1)

    def model_features(self, models: Mapping[str, Array]) -> dict[str, Array]:
        """Enabled model-side feature vectors, one row per distinct model ``[U, d_f]``."""
        out: dict[str, Array] = {}
        if self.use_model_name:
            out["name"] = self.name_embedding(models["name_tokens"], models["name_mask"])
        if self.use_model_id:
            out["model_id"] = self.model_id_embed(models["model_id"])
        if self.use_model_desc:
            out["model_desc"] = jnp.asarray(models["model_desc"], jnp.float32)
        if self.use_size_feature:
            out["size"] = self.size_features(models)
        if self.use_family:
            out["family"] = self.family_embed(models["family"])
        if self.use_release:
            out["release"] = self.release_features(models)
        return out

    def context_features(self, groups: Mapping[str, Array]) -> dict[str, Array]:
        """Enabled context-side feature vectors, one row per group ``[S, d_f]``."""
        out: dict[str, Array] = {}
        if self.use_dataset_id:
            out["dataset_id"] = self.dataset_id_embed(groups["dataset_id"])
        if self.use_dataset_desc:
            out["dataset_desc"] = jnp.asarray(groups["dataset_desc"], jnp.float32)
        out["task"] = self.task_embed(groups["task"])
        out["metric"] = self.metric_embed(groups["metric"])
        return out

    def competence_pre(self, x: Array) -> Array:
        """First-layer contribution ``[..., hidden]`` of per-record competence features
        ``[..., F]`` (NaN = unknown: the value counts 0 and its known flag 0)."""
        x = jnp.asarray(x, jnp.float32)
        known = jnp.isfinite(x)
        enc = jnp.concatenate([jnp.where(known, x, 0.0), known.astype(jnp.float32)], -1)
        return _matmul(enc, self.competence_proj.kernel[...], self.dtype)

    def _project(self, feats: Mapping[str, Array], num: int) -> Array:
        acc = jnp.zeros((num, self.hidden_dim), jnp.float32)
        for f, x in feats.items():
            acc = acc + _matmul(x, self.first.kernels[f][...], self.dtype)
        return acc

    # ------------------------------------------------------------------ factorised first layer
    def model_side(self, models: Mapping[str, Array]) -> Array:
        """Model half of the first layer (pre-activation, no bias), ``[U, hidden]`` float32."""
        u = models["model_id"].shape[0]
        return self._project(self.model_features(models), u)

    def context_side(self, groups: Mapping[str, Array]) -> Array:
        """Context half of the first layer plus its bias, ``[S, hidden]`` float32."""
        feats = self.context_features(groups)
        return self._project(feats, groups["task"].shape[0]) + self.first.bias[...]

    def _side_records(
        self,
        feats: Mapping[str, Array],
        num: int,
        slot: Array,
        feature: str,
        table: str,
        drop: Array | None,
        blocks: int = 1,
    ) -> Array:
        """One side of the first layer gathered to the records ``[R, L, hidden]``. With an ID
        dropout mask ``drop`` ``[R, L]`` (True = [UNK]), the ID's projection ``W·e_id`` is
        computed once per distinct row (never per record) and a dropped record takes
        ``rest + W·e_unk`` instead of ``rest + W·e_id``."""
        if drop is None:
            return _take(self._project(feats, num), slot, blocks)
        feats = dict(feats)
        ids = _matmul(feats.pop(feature), self.first.kernels[feature][...], self.dtype)
        rest = _take(self._project(feats, num), slot, blocks)
        e_unk = getattr(self, table).embedding[...][:1]
        unk = _matmul(e_unk, self.first.kernels[feature][...], self.dtype)
        return rest + jnp.where(drop[..., None], unk, _take(ids, slot, blocks))

    def model_prior(self, models: Mapping[str, Array]) -> Array:
        """Size/family prior score per distinct model ``[U]``; zeros when no prior is enabled."""
        if not self.has_prior:
            return jnp.zeros((models["model_id"].shape[0],), jnp.float32)
        parts = []
        if self.use_size_prior:
            parts.append(self.size_features(models))
        if self.use_family:
            parts.append(self.family_embed(models["family"]))
        x = jax.nn.relu(_dense(self.prior_hidden, jnp.concatenate(parts, -1), self.dtype))
        return _dense(self.prior_out, x, self.dtype)[..., 0]

    def first_layer_kernel(self) -> Array:
        """The split kernel reassembled as the upstream ``[in_dim, hidden]`` matrix (§4 order)."""
        return jnp.concatenate([self.first.kernels[f][...] for f in self.feature_dims], 0)

    # ------------------------------------------------------------------------------ forward
    def _rates(self, rates: Mapping[str, Any] | None) -> dict[str, Any]:
        """Dropout rates: the config's, or per-call overrides (traced arrays allowed, so sweep
        members with different rates share one program)."""
        out = {"dropout": self.dropout_rate, "model_id_dropout": self.model_id_dropout,
               "dataset_id_dropout": self.dataset_id_dropout}  # fmt: skip
        for k, v in (rates or {}).items():
            if k not in out:
                raise ValueError(f"unknown rate {k!r}: expected one of {sorted(out)}")
            out[k] = v
        if not self.use_model_id:
            out["model_id_dropout"] = 0.0
        if not self.use_dataset_id:
            out["dataset_id_dropout"] = 0.0
        return out

    def id_dropout_masks(
        self, key: Array, shape: tuple[int, ...], rates: Mapping[str, Any] | None = None
    ) -> tuple[Array, Array]:
        """Per-record Bernoulli masks (True = replace by [UNK]) for model and dataset IDs."""
        r = self._rates(rates)
        k_m, k_d = jax.random.split(key)
        return (
            jax.random.bernoulli(k_m, r["model_id_dropout"], shape),
            jax.random.bernoulli(k_d, r["dataset_id_dropout"], shape),
        )

    def _keys(self, train: bool, key: Array | None) -> tuple[Array, Array] | None:
        if not train:
            return None
        if key is None:
            raise ValueError("train=True needs a PRNG key")
        k_id, k_drop = jax.random.split(key)
        return k_id, k_drop

    def _trunk(
        self,
        pre: Array,
        prior: Array,
        train: bool,
        key: Array | None,
        rate: Any = 0.0,
        inter: Array | float = 0.0,
    ) -> dict[str, Array]:
        """ReLU → Dropout → Linear → ReLU → Dropout → heads; then the tempered score."""
        h = jax.nn.relu(pre)
        if train:
            k1, k2 = jax.random.split(key)
            h = _dropout(h, rate, k1)
        h = jax.nn.relu(_dense(self.second, h, self.dtype))
        if train:
            h = _dropout(h, rate, k2)
        residual = _dense(self.rank_head, h, self.dtype)[..., 0]
        z_hat = _dense(self.point_head, h, self.dtype)[..., 0]
        residual = residual + inter
        score = (residual + prior) / jnp.maximum(self.temperature[...], MIN_TEMPERATURE)
        return {"score": score, "prior": prior, "residual": residual, "z_hat": z_hat}

    def _interaction(self, m_pre: Array, c_pre: Array) -> Array | float:
        """Per-record bilinear term from the two halves of the first layer (0 when off)."""
        if self.interaction_dim == 0:
            return 0.0
        pm, pc = self.interaction.project(m_pre, c_pre, self.dtype)
        return jnp.sum(pm * pc, -1)

    def __call__(
        self,
        batch: Mapping[str, Array],
        *,
        train: bool = False,
        key: Array | None = None,
        rates: Mapping[str, Any] | None = None,
    ) -> dict[str, Array]:
        """Scores every record slot: ``score``, ``prior``, ``residual``, ``z_hat``, each [R, L].

        ``train=True`` applies ID dropout and dropout with randomness derived from ``key``;
        ``train=False`` is deterministic. Values at padded slots are meaningless (but finite).
        ``rates`` overrides the config's dropout / ID-dropout rates (see ``_rates``).
        """
        keys = self._keys(train, key)
        r = self._rates(rates)
        mslot, gslot = batch["model_slot"], batch["group_slot"]
        u, s = batch["model_id"].shape[0], batch["task"].shape[0]
        blocks = batch["blocks"].shape[1] if "blocks" in batch else 1
        comp = batch["competence"] if self.use_competence else None
        cold = keys is not None and self.cold_model_rate > 0
        if cold:
            # cold-start episodes: a share of the batch's models is new for all its records
            # (ID and history withheld), as models that arrive after training are
            cold_u = jax.random.bernoulli(
                jax.random.fold_in(keys[0], 1), self.cold_model_rate, (u,)
            )
            cold_r = _take(cold_u, mslot, blocks)
            comp = jnp.where(cold_r[..., None], batch["competence_cold"], comp)
        drop = keys is not None
        id_drop_m = (
            drop and self.use_model_id and (rates is not None or self.model_id_dropout > 0 or cold)
        )
        id_drop_d = (
            drop and self.use_dataset_id and (rates is not None or self.dataset_id_dropout > 0)
        )
        if id_drop_m or id_drop_d:
            drop_m, drop_d = self.id_dropout_masks(keys[0], mslot.shape, r)
            if cold and self.use_model_id:
                drop_m = drop_m | cold_r
        m_rec = self._side_records(
            self.model_features(batch), u, mslot, "model_id", "model_id_embed",
            drop_m if id_drop_m else None, blocks,
        )  # fmt: skip
        c_rec = self._side_records(
            self.context_features(batch), s, gslot, "dataset_id", "dataset_id_embed",
            drop_d if id_drop_d else None, blocks,
        ) + self.first.bias[...]  # fmt: skip
        prior = _take(self.model_prior(batch), mslot, blocks)
        key2 = None if keys is None else keys[1]
        inter = self._interaction(m_rec, c_rec)
        pre = m_rec + c_rec
        if comp is not None:
            pre = pre + self.competence_pre(comp)
        return self._trunk(pre, prior, train, key2, r["dropout"], inter)

    # ------------------------------------------------------------------------------ serving
    def score_sides(
        self, mside: Array, cside: Array, prior: Array, competence: Array | None = None
    ) -> dict[str, Array]:
        """Inference scores of every group against every model ``[S, U]`` from cached sides.

        For serving: compute ``model_side``/``model_prior`` once for all candidates, then one
        ``context_side`` per query dataset; ``competence`` ``[S, U, F]`` when the scorer uses it.
        """
        pre = cside[:, None, :] + mside[None, :, :]
        if self.use_competence:
            pre = pre + self.competence_pre(competence)
        inter: Array | float = 0.0
        if self.interaction_dim:
            pm, pc = self.interaction.project(mside, cside, self.dtype)
            inter = jnp.einsum("sk,uk->su", pc, pm)
        prior = jnp.broadcast_to(prior[None, :], pre.shape[:2])
        return self._trunk(pre, prior, False, None, 0.0, inter)

    def score_all(
        self,
        models: Mapping[str, Array],
        groups: Mapping[str, Array],
        competence: Array | None = None,
    ) -> dict:
        """Inference scores ``[S, U]`` of each group in ``groups`` against each model."""
        return self.score_sides(
            self.model_side(models), self.context_side(groups), self.model_prior(models),
            competence,
        )  # fmt: skip


def zero_rows(model: Scorer, rows: Mapping[str, Any]) -> Scorer:
    """Sets the marked rows (True) of the named embedding tables to zero, in place; tables the
    scorer does not have are skipped. See ``FeatureTables.untrained_rows``."""
    for attr, mask in rows.items():
        table = getattr(model, attr, None)
        if table is not None:
            keep = ~jnp.asarray(mask, bool)[:, None]
            table.embedding[...] = jnp.where(keep, table.embedding[...], 0.0)
    return model


def _model_keys(m: Scorer) -> list[str]:
    """The models-block inputs ``m`` reads (``features.MODEL_INPUTS`` by its switches)."""
    return features.used(features.MODEL_INPUTS, lambda switch: getattr(m, switch))


def _group_keys(m: Scorer) -> list[str]:
    """The groups-block inputs ``m`` reads (``features.CONTEXT_INPUTS`` by its switches)."""
    return features.used(features.CONTEXT_INPUTS, lambda switch: getattr(m, switch))


# ---------------------------------------------------------------------------------- sizes
def param_counts(config_model: Any, sizes: FeatureSizes) -> dict[str, int]:
    """Parameter count per block (plus ``total``), from abstract shapes: nothing is allocated."""
    abstract = nnx.eval_shape(lambda: Scorer(config_model, sizes, rngs=nnx.Rngs(0)))
    counts = dict.fromkeys(BLOCK_NAMES, 0)
    for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        counts[PARAMETERS[str(path[0])][0]] += int(var.size)
    counts["total"] = sum(counts[b] for b in BLOCK_NAMES)
    return counts


# ------------------------------------------------------------------------------ sharding
def partition_spec(path: Sequence[str]) -> P:
    """The PartitionSpec of the state leaf at ``path`` (its keys): an ID table's embedding, and
    the optimizer moments whose paths mirror it, split columns (``TABLE_SPEC``); all else
    replicates."""
    for i, key in enumerate(path):
        if key in ID_TABLES and "embedding" in path[i + 1 :]:
            return TABLE_SPEC
    return P()


def partition_specs(state: nnx.State) -> Any:
    """A tree like ``state`` with a PartitionSpec per leaf, by :func:`partition_spec`."""

    def spec(path: tuple, _: Any) -> P:
        return partition_spec([str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)])

    return jax.tree_util.tree_map_with_path(spec, state)


# ---------------------------------------------------------------------------- paper dims
PAPER_SIZES = FeatureSizes(
    num_model_ids=47_001,  # 47,000 models + [UNK]
    name_buckets=10_000,
    num_size_buckets=23,
    num_families=400,
    num_dataset_ids=9_601,  # 9,600 dataset ids + [UNK]
    num_tasks=300,
    num_metrics=600,
    model_desc_dim=1536,
    dataset_desc_dim=1536,
)
