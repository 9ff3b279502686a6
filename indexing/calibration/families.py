"""Monotone score transforms g(x) of the Cosine Adapter: logit = a(q) * g(x) + b(q), a(q) > 0.

Every family is odd and increasing in x, so with a(q) > 0 the mapped relevance is increasing in the
raw score for a fixed query: a threshold on relevance never reorders a query's results.
`quadratic` is the signed square sgn(x)*x^2 (the plain square is not monotone for x < 0).

For fitting, g is centred and scaled at a reference score c: g(x) = (sgn(x)|x|^k - c^k) / (k c^(k-1)).
That is an affine change of (a, b) for a fixed k, so the family is the paper's, but the slope at c
is 1 for every k: without it a and b grow without bound as k -> 0 (where g tends to c*log(x/c)).
"""

from __future__ import annotations

import numpy as np

FAMILIES: tuple[str, ...] = ("linear", "sqrt", "quadratic", "power")
_FIXED_EXPONENT = {"linear": 1.0, "sqrt": 0.5, "quadratic": 2.0}
_EPS = 1e-6
REFERENCE_SCORE = 0.5


def exponent_of(family: str, power_exponent: float) -> float:
    """The exponent k of sgn(x)*|x|^k that a family uses (`power` learns it)."""
    if family == "power":
        return float(power_exponent)
    if family not in _FIXED_EXPONENT:
        raise ValueError(f"unknown calibration family {family!r}; expected one of {FAMILIES}")
    return _FIXED_EXPONENT[family]


def transform(x: np.ndarray, k: float) -> np.ndarray:
    """(sgn(x)|x|^k - c^k) / (k c^(k-1)), strictly increasing in x for k > 0."""
    c = REFERENCE_SCORE
    return (np.sign(x) * (np.abs(x) + _EPS) ** k - c**k) / (k * c ** (k - 1))


def transform_dk(x: np.ndarray, k: float) -> np.ndarray:
    """d/dk of `transform` (for fitting the power family's exponent)."""
    c = REFERENCE_SCORE
    ax = np.abs(x) + _EPS
    num = np.sign(x) * ax**k - c**k
    dnum = np.sign(x) * ax**k * np.log(ax) - c**k * np.log(c)
    den = k * c ** (k - 1)
    dden = c ** (k - 1) + k * c ** (k - 1) * np.log(c)
    return (dnum * den - num * dden) / den**2
