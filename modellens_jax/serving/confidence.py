"""How sure a seed ensemble is of each candidate's place in a ranking (numpy only: serving and
the backtests' calibration share this one definition).

Each candidate ``i`` has the members' mean score ``μ_i`` and their spread ``σ_i`` (the standard
deviation over members). Reading each score as ``N(μ_i, σ_i²)``, the chance that ``i`` and
another candidate ``j`` swap places is ``Φ(−|μ_i − μ_j| / √(σ_i² + σ_j²))``: small when their
gap is large against the spreads. Summed over the other candidates it is ``displacement_i``, the
expected number of places ``i`` would move, and

    confidence_i = 1 / (1 + displacement_i)

is 1 when the members agree so well that no gap is in doubt, 1/2 when the candidate is expected
to be one place off, 1/(1 + k) when k places. It is a property of the list scored together
(the ranked pool after filters), so the same model can be surer in a small pool than in a
dense one. Candidates with no spread at all (a single model) have no confidence to report.
"""

from __future__ import annotations

import numpy as np

CHUNK = 1024  # candidates per block of the pairwise computation (memory: CHUNK × pool)


def _normal_sf(x: np.ndarray) -> np.ndarray:
    """``1 − Φ(x)`` for ``x ≥ 0`` (Abramowitz & Stegun 7.1.26 for erfc; error < 1.5e-7)."""
    z = x / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                + t * 1.061405429))))  # fmt: skip
    return 0.5 * poly * np.exp(-z * z)


def displacement(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per candidate: the expected number of other candidates that would swap places with it
    (``Σ_j Φ(−|μ_i − μ_j| / √(σ_i² + σ_j²))``; a pair with no spread at all never swaps)."""
    mean = np.asarray(mean, np.float64).reshape(-1)
    var = np.square(np.asarray(std, np.float64).reshape(-1))
    if mean.shape != var.shape:
        raise ValueError(f"mean {mean.shape} and std {var.shape} must be one list")
    out = np.zeros(len(mean))
    for a in range(0, len(mean), CHUNK):
        gap = np.abs(mean[a : a + CHUNK, None] - mean[None])
        s = np.sqrt(var[a : a + CHUNK, None] + var[None])
        p = np.where(s > 0, _normal_sf(gap / np.where(s > 0, s, 1.0)), 0.0)
        rows = np.arange(a, min(a + CHUNK, len(mean)))
        p[rows - a, rows] = 0.0  # not against itself
        out[a : a + CHUNK] = p.sum(1)
    return out


def confidence(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``1 / (1 + displacement)`` per candidate of the list (see the module docstring)."""
    return 1.0 / (1.0 + displacement(mean, std))
