"""The paper's ablations as named presets over ``configs/default.py``.

Train one::

  python -m modellens_jax.train --config=configs/ablations.py:semantic_only --workdir=runs/sem

Train and compare several against the baselines (one table)::

  python -m modellens_jax.ablate --presets=main,listwise,semantic_only --workdir=runs/ablate

A preset string may add ``configs/default.py`` presets after a comma
(``configs/ablations.py:semantic_only,tiny``). ``main`` is the default config unchanged.

Loss objectives (upstream ``config/method_ablation``)
  ensemble             λ_list 0.5, λ_pair 1, λ_point 0.1, Plackett-Luce mean (upstream's; main
                       keeps the weights with the validation-tuned PL sum and z-gap BPR)
  listwise             Plackett-Luce only, summed over positions (``ListwiseRankLoss``)
  pairwise             BPR only
  listwise_pointwise   Plackett-Luce (mean) + 0.1 pointwise MSE
  pairwise_pointwise   BPR + 0.1 pointwise MSE
  listwise_pairwise    0.5 Plackett-Luce (sum) + 1 BPR
Information sources (``config/ablation_information``; task and metric are always on)
  interaction_only     model ID, dataset ID; no name, descriptions, size, family; ID dropout 0
  semantic_only        model name + description, dataset description; no IDs, size, family
  structural_only      size (feature + prior) and family only; ID dropout 0
  interaction_semantic IDs + name + descriptions; no size, family
  interaction_structural  IDs + size + family; no name, descriptions; ID dropout 0
  semantic_structural  name + descriptions + size + family; no IDs; ID dropout 0
Size and family (``config/ablation_size``, ``config/ablation_family``)
  no_size_prior        size feature kept, size prior off
  no_size_feature      size feature off (which also turns the prior and the cold-start prior off)
  no_family            family embedding leaves backbone and prior
Beyond the paper (what this implementation adds to the scorer)
  interaction          adds the bilinear model × context term (k = 64; off by default)
  no_release           no release-date input
  no_cold_size_prior   no fitted cold-start size prior for models without a learned ID
  competence           per-record competence features + cold-start episodes
  paper_scorer         release and cold-start prior off, ID tables N(0, 1): the paper's scorer (plus
                       the continuous log-size input and zeroed untrained rows)

Structural inputs are size (bucket and log-size), family and release date.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

_DEFAULT = Path(__file__).resolve().parent / "default.py"


def _default_module():
    spec = importlib.util.spec_from_file_location("_modellens_default_config", _DEFAULT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _losses(listwise: float, pairwise: float, pointwise: float, pl_reduction: str = "mean"):
    def apply(c):
        c.loss.weights.update(listwise=listwise, pairwise=pairwise, pointwise=pointwise)
        c.loss.pl_reduction = pl_reduction

    return apply


def _sources(model: str, dataset: str, size: bool, family: bool, id_dropout: float | None):
    """``model`` / ``dataset``: comma lists of the inputs left on (id, name, desc)."""
    on_m, on_d = set(model.split(",")), set(dataset.split(","))

    def apply(c):
        m = c.model
        m.use_model_id = "id" in on_m
        m.use_model_name = "name" in on_m
        m.use_model_desc = "desc" in on_m
        m.use_dataset_id = "id" in on_d
        m.use_dataset_desc = "desc" in on_d
        m.use_size_feature = m.use_size_prior = m.use_release = size
        m.use_family_prior = family
        c.cold_start.fit = c.cold_start.fit and size  # the cold-start prior is a size input
        if id_dropout is not None:
            m.model_id_dropout = m.dataset_id_dropout = id_dropout

    return apply


def _set(cold_start: bool = True, **switches):
    """Model switches; ``cold_start=False`` also turns the fitted cold-start size prior off."""

    def apply(c):
        c.model.update(**switches)
        c.cold_start.fit = c.cold_start.fit and cold_start

    return apply


PRESETS = {
    "main": lambda c: None,
    # loss objectives
    "ensemble": _losses(0.5, 1.0, 0.1),
    "listwise": _losses(1.0, 0.0, 0.0, "sum"),
    "pairwise": _losses(0.0, 1.0, 0.0),
    "listwise_pointwise": _losses(1.0, 0.0, 0.1),
    "pairwise_pointwise": _losses(0.0, 1.0, 0.1),
    "listwise_pairwise": _losses(0.5, 1.0, 0.0, "sum"),
    # information sources
    "interaction_only": _sources("id", "id", size=False, family=False, id_dropout=0.0),
    "semantic_only": _sources("name,desc", "desc", size=False, family=False, id_dropout=None),
    "structural_only": _sources("", "", size=True, family=True, id_dropout=0.0),
    "interaction_semantic": _sources(
        "id,name,desc", "id,desc", size=False, family=False, id_dropout=None
    ),
    "interaction_structural": _sources("id", "id", size=True, family=True, id_dropout=0.0),
    "semantic_structural": _sources("name,desc", "desc", size=True, family=True, id_dropout=0.0),
    # size and family
    "no_size_prior": _set(use_size_prior=False),
    "no_size_feature": _set(use_size_feature=False, use_size_prior=False, cold_start=False),
    "no_family": _set(use_family_prior=False),
    # beyond the paper
    "interaction": _set(interaction_dim=64),
    "no_release": _set(use_release=False),
    "no_cold_size_prior": _set(cold_start=False),
    "competence": _set(use_competence=True, cold_model_rate=0.2),
    "paper_scorer": _set(use_release=False, id_init_std=1.0, cold_start=False),
}
LOSS_PRESETS = ("ensemble", "listwise", "pairwise", "listwise_pointwise", "pairwise_pointwise",
                "listwise_pairwise")  # fmt: skip
SOURCE_PRESETS = ("interaction_only", "semantic_only", "structural_only", "interaction_semantic",
                  "interaction_structural", "semantic_structural")  # fmt: skip
SIZE_FAMILY_PRESETS = ("no_size_prior", "no_size_feature", "no_family")
EXTENSION_PRESETS = ("interaction", "no_release", "no_cold_size_prior", "competence",
                     "paper_scorer")  # fmt: skip


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """``configs/default.py``'s config with one ablation applied; further comma-separated names
    are ``configs/default.py`` presets (paper, reference, tiny)."""
    names = [p.strip() for p in (preset or "main").split(",") if p.strip()] or ["main"]
    ablation, rest = names[0], names[1:]
    if ablation not in PRESETS:
        raise ValueError(
            f"unknown ablation preset {ablation!r}: expected one of {', '.join(PRESETS)}"
        )
    c = _default_module().get_config(",".join(rest) or None)
    PRESETS[ablation](c)
    return c
