"""Corpus schema facts: columns, metric directions, family names, name tokens, size buckets.

Pure functions over strings and numbers; ingestion applies them row by row.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

import numpy as np

RECORD_COLUMNS = ("task", "dataset", "model", "metric", "value")
LEADERBOARD_RECORD_COLUMNS = (*RECORD_COLUMNS, "dataset_desp", "higher_is_better", "source", "date")
MODEL_COLUMNS = ("model", "family", "params", "model_desp", "release_date", "source")
DATASET_COLUMNS = ("dataset", "task", "dataset_desp", "modality", "source")
MODELLENS_RECORD_COLUMNS = (*RECORD_COLUMNS, "dataset_desp")

UNK = "[UNK]"

# --- metric direction ---------------------------------------------------------------------------
# Lower-is-better metric names, matched as whole words (case-insensitive) anywhere in the metric
# name, so "FID50k", "val loss", "WER (clean)" and "NME test" all resolve. Checked before the
# higher-is-better table, so "error rate" is lower-is-better even though "rate" is not listed.
LOWER_IS_BETTER = (
    "loss",
    "error",
    "err",
    "wer",
    "cer",
    "perplexity",
    "ppl",
    "fid",
    "kid",
    "rank",
    "mae",
    "mse",
    "rmse",
    "msle",
    "epe",
    "nme",
    "mpjpe",
    "fl-all",
    "latency",
    "runtime",
    "niqe",
    "brisque",
    "lpips",
    "chamfer",
    "miss rate",
    "eer",
    "hter",
    "bpd",
    "bits per dim",
    "distance",
    "sad",
    "grad",
    "conn",
    "l1 error",
    "l2 error",
    "cost",
    "fpr95",
    "ece",
    "mrrpe",
    "p-mpjpe",
    "n-mpjpe",
)
HIGHER_IS_BETTER = (
    "accuracy",
    "acc",
    "top1",
    "top5",
    "top-1",
    "top-5",
    "f1",
    "map",
    "ap",
    "ap50",
    "ap75",
    "miou",
    "iou",
    "dice",
    "bleu",
    "rouge",
    "rougel",
    "meteor",
    "cider",
    "spice",
    "chrf",
    "ndcg",
    "mrr",
    "recall",
    "precision",
    "auc",
    "auroc",
    "roc",
    "pass",
    "pass@1",
    "win rate",
    "win_rate",
    "score",
    "main_score",
    "psnr",
    "ssim",
    "ms-ssim",
    "pck",
    "pckh",
    "oks",
    "hota",
    "mota",
    "idf1",
    "spearman",
    "pearson",
    "cosine",
    "correlation",
    "exact match",
    "em",
    "r2",
    "bertscore",
    "mcc",
    "kappa",
    "v_measure",
    "is",
    "inception score",
    "hit",
    "success",
    "average",
    "avg",
    "winrate",
    "kendalltau",
    "lrap",
    "mdice",
    "nmi",
    "percent",
    "ar",
    "aph",
    "nds",
    "pq",
    "eao",
    "ao",
    "sr",
    "cf1",
    "of1",
    "nrqm",
    "mean",
    "total",
    "maph",
)
_WORD = re.compile(r"[a-z0-9@]+(?:[-_][a-z0-9@]+)*")
_SEP = re.compile(r"[-_\s]+")


def _metric_words(metric: str) -> set[str]:
    m = metric.strip().lower()
    words = set(_WORD.findall(m))
    for w in list(words):  # "fid50k" -> "fid", "top1" kept whole, "l1 error" -> "l1", "error"
        words.update(p for p in re.split(r"[-_@]", w) if p)
    for w in list(words):
        stripped = re.sub(r"[\d.]+k?$", "", w)
        if stripped:
            words.add(stripped)
    words.add(m)
    return words


def _matches(key: str, words: set[str], phrase: str) -> bool:
    """``key`` is one of the metric's words, or (for a multi-word key such as "win rate" or
    "fl-all") appears as whole words in the metric with '-', '_' and spaces treated alike."""
    if key in words:
        return True
    k = _SEP.sub(" ", key)
    return " " in k and f" {k} " in phrase


def infer_direction(metric: str, overrides: Mapping[str, int] | None = None) -> int | None:
    """+1 if higher is better, -1 if lower is better, None if the tables cannot tell.

    ``overrides`` (metric name -> +1/-1, exact name) wins over the tables. Lower-is-better
    words are checked first, so "top-1 error" and "mean rank" are -1 and "per-class accuracy"
    is +1; matching is case-insensitive and on whole words ("fid50k" -> "fid", "val_loss" ->
    "loss"), so "map" does not match "bitmap".
    """
    if overrides and metric in overrides:
        return int(overrides[metric])
    words = _metric_words(metric)
    phrase = f" {_SEP.sub(' ', metric.strip().lower())} "
    if any(_matches(k, words, phrase) for k in LOWER_IS_BETTER):
        return -1
    if any(_matches(k, words, phrase) for k in HIGHER_IS_BETTER):
        return 1
    return None


# --- model families -----------------------------------------------------------------------------
_FAMILY_SPLIT = re.compile(r"[-_.\s/:]+")


def derive_family(model: str) -> str:
    """Family from a model name when the data has none: the first alphabetic stem of the name's
    basename (after the last '/'), lower-cased, trailing digits dropped ('Llama-2-7b' -> 'llama',
    'resnet50.a1_in1k' -> 'resnet', 'eva02_large' -> 'eva'); 'unknown' when nothing is left."""
    base = model.strip().lower().rsplit("/", 1)[-1]
    for piece in _FAMILY_SPLIT.split(base):
        stem = re.sub(r"[\d]+.*$", "", piece) if not piece[:1].isdigit() else ""
        if len(stem) >= 2:
            return stem
    return "unknown"


# --- name tokens --------------------------------------------------------------------------------
_NAME_SPLIT = re.compile(r"[/_\-\s]+")


def name_tokens(model: str) -> list[str]:
    """Upstream tokenisation: [full name, basename after the last '/' if any, the non-empty
    pieces of a split on [/_-\\s]+], lower-cased, de-duplicated in order ('.' is no separator)."""
    name = model.strip().lower()
    if not name:
        return []
    toks = [name]
    if "/" in name:
        toks.append(name.rsplit("/", 1)[-1])
    toks.extend(p for p in _NAME_SPLIT.split(name) if p)
    return list(dict.fromkeys(toks))


def token_bucket(token: str, buckets: int) -> int:
    """int(md5(token).hexdigest(), 16) mod buckets, as upstream."""
    return int(hashlib.md5(token.encode("utf-8")).hexdigest(), 16) % buckets


def name_token_array(models: list[str], buckets: int, max_tokens: int) -> tuple[np.ndarray, ...]:
    """[M, T] int32 buckets and bool mask (names with more than T tokens are truncated)."""
    ids = np.zeros((len(models), max_tokens), np.int32)
    mask = np.zeros((len(models), max_tokens), bool)
    for i, m in enumerate(models):
        toks = name_tokens(m)[:max_tokens]
        ids[i, : len(toks)] = [token_bucket(t, buckets) for t in toks]
        mask[i, : len(toks)] = True
    return ids, mask


# --- sizes --------------------------------------------------------------------------------------
def size_bucket(params_billions: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Bucket 0 = unknown (NaN or <= 0); 1 .. len(edges)+1 by np.digitize over the edges."""
    p = np.asarray(params_billions, np.float64)
    known = np.isfinite(p) & (p > 0)
    out = np.zeros(p.shape, np.int32)
    out[known] = np.digitize(p[known], np.asarray(edges)) + 1
    return out


def log_size(params_billions: np.ndarray) -> np.ndarray:
    """``log10(params in billions)`` clipped to [-4, 4] (a continuous, ordered size); 0 when
    unknown (the size bucket's 0 marks unknown)."""
    p = np.asarray(params_billions, np.float64)
    known = np.isfinite(p) & (p > 0)
    out = np.zeros(p.shape, np.float32)
    out[known] = np.clip(np.log10(p[known]), -4.0, 4.0)
    return out


def release_years(days_since_1970: np.ndarray) -> np.ndarray:
    """Release date as years since 2000 (float32, > 0); 0 when unknown (negative days)."""
    d = np.asarray(days_since_1970, np.float64)
    years = (d - 10957.0) / 365.25  # 10957 days from 1970-01-01 to 2000-01-01
    return np.where(d >= 0, np.maximum(years, 1e-3), 0.0).astype(np.float32)
