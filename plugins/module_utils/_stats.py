# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Statistics for the verdicts, in pure Python (no scipy, no numpy).

Everything here is deterministic: the bootstrap takes a seed. The tests
check each function against scipy (installed for the tests only) or
published tables.

``alternative`` follows scipy's convention everywhere: ``"greater"`` means
the first sample (or the count) is larger than the null says.
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist
from typing import Callable, Sequence

ALTERNATIVES = ("two-sided", "greater", "less")
_NORMAL = NormalDist()
# scipy's relative tolerance for "as extreme as" in exact two-sided tests.
_REL_TOL = 1 + 1e-7


class StatsError(ValueError):
    """Arguments a statistic cannot be computed from."""


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise StatsError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")


def _clip(p: float) -> float:
    return min(1.0, max(0.0, p))


def significant(p_value: float | None, alpha: float) -> bool:
    """``p_value < alpha``, with a p-value equal to alpha up to rounding (1/20 against 0.05) not significant."""
    return p_value is not None and p_value < alpha * (1.0 - 1e-9)


# --------------------------------------------------------------- the normal


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def norm_sf(x: float) -> float:
    """``1 - norm_cdf(x)``, accurate in the upper tail."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    """The standard normal quantile of ``p`` (0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise StatsError(f"norm_ppf needs 0 < p < 1, got {p}")
    return _NORMAL.inv_cdf(p)


# ---------------------------------------------------------- descriptive


def quantile(values: Sequence[float], q: float, presorted: bool = False) -> float:
    """The ``q`` quantile with linear interpolation (numpy's default, Hyndman-Fan type 7)."""
    if not values:
        raise StatsError("quantile of an empty sample")
    if not 0.0 <= q <= 1.0:
        raise StatsError(f"quantile q must be between 0 and 1, got {q}")
    data = values if presorted else sorted(values)
    position = (len(data) - 1) * q
    low = int(math.floor(position))
    high = min(low + 1, len(data) - 1)
    fraction = position - low
    return data[low] + (data[high] - data[low]) * fraction


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def mean(values: Sequence[float]) -> float:
    if not values:
        raise StatsError("mean of an empty sample")
    return math.fsum(values) / len(values)


def thin(values: Sequence[float], most: int) -> list[float]:
    """At most ``most`` values that keep the sample's distribution: evenly spaced order statistics.

    Deterministic, and keeps the minimum and the maximum.
    """
    data = sorted(values)
    if most <= 0:
        return []
    if len(data) <= most:
        return data
    if most == 1:
        return [quantile(data, 0.5, presorted=True)]
    step = (len(data) - 1) / (most - 1)
    return [data[int(round(i * step))] for i in range(most)]


def rank(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Mid-ranks (1-based, ties get the mean of their ranks) and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        midrank = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            ranks[order[k]] = midrank
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


# ------------------------------------------------------------- binomial


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def binom_pmf(k: int, n: int, p: float) -> float:
    if k < 0 or k > n:
        return 0.0
    if p <= 0.0:
        return 1.0 if k == 0 else 0.0
    if p >= 1.0:
        return 1.0 if k == n else 0.0
    if n <= 1000:
        return math.comb(n, k) * p ** k * (1.0 - p) ** (n - k)
    return math.exp(_log_comb(n, k) + k * math.log(p) + (n - k) * math.log1p(-p))


def binom_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return _clip(math.fsum(binom_pmf(i, n, p) for i in range(0, k + 1)))


def binom_sf(k: int, n: int, p: float) -> float:
    """``P(X > k)``."""
    if k < 0:
        return 1.0
    if k >= n:
        return 0.0
    return _clip(math.fsum(binom_pmf(i, n, p) for i in range(k + 1, n + 1)))


def binom_test(k: int, n: int, p: float = 0.5, alternative: str = "two-sided") -> float:
    """Exact binomial test p-value of ``k`` successes in ``n`` trials (as ``scipy.stats.binomtest``)."""
    _check_alternative(alternative)
    if n < 0 or not 0 <= k <= n:
        raise StatsError(f"binom_test needs 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 <= p <= 1.0:
        raise StatsError(f"binom_test needs 0 <= p <= 1, got {p}")
    if n == 0:
        return 1.0
    if alternative == "greater":
        return binom_sf(k - 1, n, p)
    if alternative == "less":
        return binom_cdf(k, n, p)
    observed = binom_pmf(k, n, p)
    total = math.fsum(q for q in (binom_pmf(i, n, p) for i in range(n + 1)) if q <= observed * _REL_TOL)
    return _clip(total)


def mcnemar_exact(regressions: int, fixes: int) -> dict[str, float | int]:
    """McNemar's exact test on paired pass/fail outcomes: the binomial test on the discordant pairs.

    ``regressions`` are pairs that passed before and fail now, ``fixes``
    the reverse. ``p_value`` is one-sided (more regressions than fixes
    than chance allows); ``p_value_two_sided`` tests any change.
    """
    if regressions < 0 or fixes < 0:
        raise StatsError("McNemar counts must be >= 0")
    discordant = regressions + fixes
    return {
        "regressions": regressions,
        "fixes": fixes,
        "discordant": discordant,
        "p_value": binom_test(regressions, discordant, 0.5, "greater"),
        "p_value_two_sided": binom_test(regressions, discordant, 0.5, "two-sided"),
    }


# ---------------------------------------------------------- proportions


def _hypergeom_logpmf(k: int, total: int, successes: int, draws: int) -> float:
    return _log_comb(successes, k) + _log_comb(total - successes, draws - k) - _log_comb(total, draws)


def fisher_exact(table: Sequence[Sequence[int]], alternative: str = "two-sided") -> float:
    """Fisher's exact test p-value of the 2x2 table ``[[a, b], [c, d]]`` (as ``scipy.stats.fisher_exact``).

    ``"greater"``: the odds ratio ``(a d) / (b c)`` is larger than 1, that
    is ``a`` is larger than chance allows given the margins.
    """
    _check_alternative(alternative)
    (a, b), (c, d) = table
    if min(a, b, c, d) < 0:
        raise StatsError("Fisher's test needs counts >= 0")
    row1, col1, total = a + b, a + c, a + b + c + d
    if row1 == 0 or col1 == 0 or row1 == total or col1 == total:
        return 1.0
    low, high = max(0, row1 + col1 - total), min(row1, col1)
    pmf = {k: math.exp(_hypergeom_logpmf(k, total, col1, row1)) for k in range(low, high + 1)}
    if alternative == "greater":
        return _clip(math.fsum(pmf[k] for k in range(a, high + 1)))
    if alternative == "less":
        return _clip(math.fsum(pmf[k] for k in range(low, a + 1)))
    observed = pmf[a]
    return _clip(math.fsum(q for q in pmf.values() if q <= observed * _REL_TOL))


def two_proportion_ztest(x1: int, n1: int, x2: int, n2: int, alternative: str = "two-sided") -> tuple[float, float]:
    """Pooled two-proportion z-test of ``x2/n2`` against ``x1/n1``: ``(z, p)``.

    ``"greater"``: the second proportion is larger. ``z`` is 0 and ``p`` 1
    when both proportions are 0 or 1 (no variance).
    """
    _check_alternative(alternative)
    if n1 <= 0 or n2 <= 0 or not 0 <= x1 <= n1 or not 0 <= x2 <= n2:
        raise StatsError(f"two_proportion_ztest needs 0 <= x <= n, n > 0; got {x1}/{n1}, {x2}/{n2}")
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if variance <= 0.0:
        return 0.0, 1.0
    z = (x2 / n2 - x1 / n1) / math.sqrt(variance)
    if alternative == "greater":
        return z, norm_sf(z)
    if alternative == "less":
        return z, norm_cdf(z)
    return z, _clip(2.0 * norm_sf(abs(z)))


def wilson_interval(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (two-sided ``confidence``)."""
    if n <= 0 or not 0 <= x <= n:
        raise StatsError(f"wilson_interval needs 0 <= x <= n, n > 0; got {x}/{n}")
    z = norm_ppf(0.5 + confidence / 2.0)
    p = x / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) of the difference ``x2/n2 - x1/n1``."""
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    p1, p2 = x1 / n1, x2 / n2
    difference = p2 - p1
    lower = difference - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    upper = difference + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return max(-1.0, lower), min(1.0, upper)


# ---------------------------------------------------- rank-based tests


def _mwu_exact_counts(n1: int, n2: int) -> list[int]:
    """Number of arrangements giving each value of U (0..n1*n2) without ties."""
    # counts[m][n] built up with f(m, n, u) = f(m - 1, n, u - n) + f(m, n - 1, u).
    table = [[[1] for _n in range(n2 + 1)] for _m in range(n1 + 1)]
    for m in range(1, n1 + 1):
        for n in range(1, n2 + 1):
            size = m * n + 1
            left = table[m - 1][n]
            right = table[m][n - 1]
            row = [0] * size
            for u, count in enumerate(right):
                row[u] += count
            for u, count in enumerate(left):
                row[u + n] += count
            table[m][n] = row
    return table[n1][n2]


def mann_whitney_u(x: Sequence[float], y: Sequence[float], alternative: str = "two-sided",
                   method: str = "auto") -> dict[str, float | str]:
    """Mann-Whitney U test of ``x`` against ``y`` (as ``scipy.stats.mannwhitneyu`` with continuity correction).

    ``"greater"``: ``x`` tends to be larger than ``y``. ``method``:
    ``"exact"`` (no ties only), ``"asymptotic"`` (normal approximation
    with tie and continuity corrections) or ``"auto"`` (exact when both
    samples have at most 8 values and there are no ties). Returns ``u``
    (U of ``x``), ``p_value``, ``method`` and ``auc`` (``U / (n1 n2)``, the
    probability that a value of ``x`` beats one of ``y``).
    """
    _check_alternative(alternative)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise StatsError("Mann-Whitney needs two non-empty samples")
    ranks, ties = rank(list(x) + list(y))
    u1 = math.fsum(ranks[:n1]) - n1 * (n1 + 1) / 2.0
    u2 = n1 * n2 - u1
    if method == "auto":
        method = "exact" if not ties and max(n1, n2) <= 8 else "asymptotic"
    if method == "exact":
        if ties:
            raise StatsError("the exact Mann-Whitney test needs samples without ties")
        counts = _mwu_exact_counts(n1, n2)
        total = float(sum(counts))
        k = int(round(u1))
        greater = sum(counts[k:]) / total
        less = sum(counts[: k + 1]) / total
        p = {"greater": greater, "less": less, "two-sided": min(1.0, 2.0 * min(greater, less))}[alternative]
    elif method == "asymptotic":
        n = n1 + n2
        mu = n1 * n2 / 2.0
        tie_term = sum(t ** 3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
        sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term))
        if sigma == 0.0:
            p = 1.0
        elif alternative == "greater":
            p = norm_sf((u1 - mu - 0.5) / sigma)
        elif alternative == "less":
            p = norm_cdf((u1 - mu + 0.5) / sigma)
        else:
            p = min(1.0, 2.0 * norm_sf((max(u1, u2) - mu - 0.5) / sigma))
    else:
        raise StatsError(f"method must be auto, exact or asymptotic, got {method!r}")
    return {"u": u1, "p_value": _clip(p), "method": method, "auc": u1 / (n1 * n2)}


def _signed_rank_exact_counts(n: int) -> list[int]:
    """Number of sign patterns giving each rank sum T+ (0..n(n+1)/2) for ranks 1..n."""
    counts = [1]
    for r in range(1, n + 1):
        new = counts + [0] * r
        for t, count in enumerate(counts):
            new[t + r] += count
        counts = new
    return counts


def wilcoxon_signed_rank(differences: Sequence[float], alternative: str = "two-sided",
                         method: str = "auto") -> dict[str, float | str | int]:
    """Wilcoxon signed-rank test of paired differences (as ``scipy.stats.wilcoxon``, ``zero_method="wilcox"``).

    Zero differences are dropped. ``"greater"``: the differences tend to
    be positive. ``method``: ``"exact"`` (no ties among ``|d|``),
    ``"asymptotic"`` (normal approximation with tie correction, no
    continuity correction) or ``"auto"`` (exact up to 50 differences
    without ties). Returns ``t_plus``, ``n`` (non-zero pairs),
    ``p_value`` and ``method``.
    """
    _check_alternative(alternative)
    nonzero = [d for d in differences if d != 0]
    n = len(nonzero)
    if n == 0:
        return {"t_plus": 0.0, "n": 0, "p_value": 1.0, "method": "none"}
    ranks, ties = rank([abs(d) for d in nonzero])
    t_plus = math.fsum(r for r, d in zip(ranks, nonzero) if d > 0)
    if method == "auto":
        method = "exact" if not ties and n <= 50 else "asymptotic"
    if method == "exact":
        if ties:
            raise StatsError("the exact signed-rank test needs differences without ties in |d|")
        counts = _signed_rank_exact_counts(n)
        total = float(2 ** n)
        k = int(round(t_plus))
        greater = sum(counts[k:]) / total
        less = sum(counts[: k + 1]) / total
        p = {"greater": greater, "less": less, "two-sided": min(1.0, 2.0 * min(greater, less))}[alternative]
    elif method == "asymptotic":
        mu = n * (n + 1) / 4.0
        variance = n * (n + 1) * (2 * n + 1) / 24.0 - sum(t ** 3 - t for t in ties) / 48.0
        if variance <= 0:
            p = 1.0
        else:
            z = (t_plus - mu) / math.sqrt(variance)
            p = {"greater": norm_sf(z), "less": norm_cdf(z), "two-sided": min(1.0, 2.0 * norm_sf(abs(z)))}[alternative]
    else:
        raise StatsError(f"method must be auto, exact or asymptotic, got {method!r}")
    return {"t_plus": t_plus, "n": n, "p_value": _clip(p), "method": method}


def median_upper_bound(values: Sequence[float], confidence: float = 0.95) -> float | None:
    """A distribution-free one-sided upper confidence bound of the median (sign-test order statistic).

    The smallest order statistic ``x(k)`` with ``P(Binomial(n, 1/2) < k) >=
    confidence``; ``None`` when ``n`` is too small for that confidence.
    """
    data = sorted(values)
    n = len(data)
    for k in range(1, n + 1):
        if binom_cdf(k - 1, n, 0.5) >= confidence:
            return data[k - 1]
    return None


def median_lower_bound(values: Sequence[float], confidence: float = 0.95) -> float | None:
    """The mirror of :func:`median_upper_bound`."""
    bound = median_upper_bound([-v for v in values], confidence)
    return None if bound is None else -bound


# ------------------------------------------------------------ bootstrap


def bootstrap_ci(
    first: Sequence[float],
    second: Sequence[float],
    statistic: Callable[[list[float], list[float]], float | None],
    confidence: float = 0.90,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic(first, second)``, resampling both samples independently.

    Both resamples are passed sorted. Deterministic for a given ``seed``.
    Resamples where the statistic is ``None`` (undefined) are skipped;
    ``None`` is returned when fewer than half are defined.
    """
    if not first or not second:
        raise StatsError("bootstrap needs two non-empty samples")
    if resamples < 10:
        raise StatsError("bootstrap needs at least 10 resamples")
    rng = random.Random(seed)
    a, b = sorted(first), sorted(second)
    na, nb = len(a), len(b)
    values: list[float] = []
    for _i in range(resamples):
        # Sorting the drawn indices sorts the resample, since a and b are sorted.
        ra = [a[i] for i in sorted(int(rng.random() * na) for _j in range(na))]
        rb = [b[i] for i in sorted(int(rng.random() * nb) for _j in range(nb))]
        value = statistic(ra, rb)
        if value is not None and not math.isnan(value):
            values.append(value)
    if len(values) < resamples / 2:
        return None
    values.sort()
    tail = (1.0 - confidence) / 2.0
    return quantile(values, tail, presorted=True), quantile(values, 1.0 - tail, presorted=True)


def quantile_ratio(q: float) -> Callable[[list[float], list[float]], float | None]:
    """The statistic ``quantile(second, q) / quantile(first, q)`` for :func:`bootstrap_ci` (sorted inputs)."""

    def statistic(first: list[float], second: list[float]) -> float | None:
        base = quantile(first, q, presorted=True)
        if base <= 0:
            return None
        return quantile(second, q, presorted=True) / base

    return statistic


def paired_ratio_of_sums_ci(
    first: Sequence[tuple[float, float]],
    second: Sequence[tuple[float, float]],
    confidence: float = 0.90,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Bootstrap interval of ``R2 / R1`` where ``R = sum(numerator) / sum(denominator)`` of (numerator, denominator) pairs.

    Used for the cache hit ratio (``sum(cache_hit_tokens) / sum(input_tokens)``
    over turns): turns are resampled whole, in each sample independently.
    """
    if not first or not second:
        raise StatsError("bootstrap needs two non-empty samples")
    rng = random.Random(seed)
    values: list[float] = []
    for _i in range(resamples):
        r1 = _ratio_of_sums([first[int(rng.random() * len(first))] for _j in range(len(first))])
        r2 = _ratio_of_sums([second[int(rng.random() * len(second))] for _j in range(len(second))])
        if r1 is not None and r2 is not None and r1 > 0:
            values.append(r2 / r1)
    if len(values) < resamples / 2:
        return None
    values.sort()
    tail = (1.0 - confidence) / 2.0
    return quantile(values, tail, presorted=True), quantile(values, 1.0 - tail, presorted=True)


def _ratio_of_sums(pairs: Sequence[tuple[float, float]]) -> float | None:
    denominator = math.fsum(p[1] for p in pairs)
    if denominator <= 0:
        return None
    return math.fsum(p[0] for p in pairs) / denominator


def ratio_of_sums(pairs: Sequence[tuple[float, float]]) -> float | None:
    """``sum(numerators) / sum(denominators)``; ``None`` when the denominators sum to 0."""
    return _ratio_of_sums(pairs)


# ------------------------------------------------------- sample sizes


def more_needed(decided: Callable[[float], bool], most: int = 10_000_000) -> int | None:
    """The smallest ``m`` in ``[0, most]`` with ``decided(m)`` true, assuming it is monotone; ``None`` if none.

    Used to say how much more data a verdict needs: ``decided(m)`` asks
    whether the test would decide with ``m`` more observations at the rates
    observed so far.
    """
    if decided(0):
        return 0
    high = 1
    while not decided(high):
        if high >= most:
            return None
        high = min(most, high * 2)
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        if decided(middle):
            high = middle
        else:
            low = middle
    return high
