"""The seed ensemble's run directory: what ``experiments.members.train_ensemble`` leaves in
``WORKDIR`` and the one way to load it back (evaluate, export, backtest).

``ensemble.members = N > 1`` trains N members that differ only in seed (member i: seed
``config.seed + SEED_STRIDE * i`` for initialisation, dropout and ID-dropout keys; all read the
data stream of ``config.seed``) in one vectorised program; each keeps its best checkpoint by the
validation judge. Layout: ``WORKDIR/config.json`` (the ensemble's config), ``WORKDIR/corpus``,
``WORKDIR/members/seed<S>/`` (ordinary run directories, each restorable with
``rundir.restore``), ``WORKDIR/cold_start.json`` (the cold-start prior fitted to the members'
mean score) and ``WORKDIR/ensemble.json`` (member directories, seeds, data seed, the config
hash; written last, so its presence means the ensemble is complete).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections

from modellens_jax import cold_start, rundir
from modellens_jax import config as config_lib

MANIFEST = "ensemble.json"
SEED_STRIDE = 1000  # member seeds seed, seed + 1000, ...: apart from other runs' seeds 0, 1, ...


def size(config: ml_collections.ConfigDict) -> int:
    """Members of the config's ensemble (1 = an ordinary single run)."""
    return int(config.ensemble.members) if "ensemble" in config else 1


def member_seeds(config: ml_collections.ConfigDict) -> list[int]:
    """Each member's seed; member 0 has the config's own (a 1-member ensemble is the run)."""
    return [int(config.seed) + SEED_STRIDE * i for i in range(size(config))]


def member_dirs(seeds: list[int]) -> list[str]:
    """The members' run directories, relative to the ensemble's workdir."""
    return [f"members/seed{s}" for s in seeds]


def is_ensemble(workdir: str | Path) -> bool:
    """Whether ``workdir`` holds a finished seed ensemble (its ``ensemble.json``)."""
    return (Path(workdir) / MANIFEST).is_file()


def write_manifest(workdir: str | Path, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Writes ``config.json`` and ``ensemble.json`` (after the members: it marks completion)."""
    workdir = Path(workdir)
    seeds = member_seeds(config)
    doc = {
        "members": member_dirs(seeds),
        "seeds": seeds,
        "data_seed": int(config.seed),
        "config_hash": config_lib.config_hash(config),
        "best": [rundir.read_summary(workdir / d).get("best") for d in member_dirs(seeds)],
    }
    (workdir / config_lib.RUN_CONFIG).write_text(config.to_json_best_effort(indent=1))
    (workdir / MANIFEST).write_text(json.dumps(doc, indent=1, default=float))
    return doc


def read_manifest(workdir: str | Path) -> dict[str, Any]:
    """``ensemble.json`` of a finished ensemble (FileNotFoundError naming it otherwise)."""
    path = Path(workdir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; is {path.parent} a finished seed ensemble?")
    return json.loads(path.read_text())


def finished(workdir: str | Path, config: ml_collections.ConfigDict) -> bool:
    """A finished ensemble of exactly this config is in ``workdir`` (so training is skipped)."""
    if not is_ensemble(workdir):
        return False
    doc = read_manifest(workdir)
    return doc.get("config_hash") == config_lib.config_hash(config) and doc.get(
        "seeds"
    ) == member_seeds(config)


@dataclasses.dataclass
class Restored:
    """A seed ensemble rebuilt from its directory: its config and every member's restored run
    (same corpus, tables and architecture; each at its best validation checkpoint)."""

    config: ml_collections.ConfigDict
    members: list[rundir.Restored]
    manifest: dict[str, Any]
    cold: cold_start.ColdStart | None = None  # fitted to the members' mean (``cold_start.json``)

    @property
    def tables(self):
        return self.members[0].tables

    @property
    def corpus(self):
        return self.members[0].corpus


def restore(
    workdir: str | Path, *, mesh: jax.sharding.Mesh | None = None, verbose: bool = False
) -> Restored:
    """Every member of the ensemble in ``workdir`` at its best checkpoint (``rundir.restore``)."""
    workdir = Path(workdir)
    doc = read_manifest(workdir)
    config = config_lib.load_run_config(workdir)
    members = [rundir.restore(workdir / d, mesh=mesh, verbose=verbose) for d in doc["members"]]
    fps = {m.corpus.fingerprint for m in members}
    if len(fps) != 1:
        raise ValueError(f"{workdir}: the members were trained on different corpora ({fps})")
    return Restored(config, members, doc, cold_start.load(workdir))
