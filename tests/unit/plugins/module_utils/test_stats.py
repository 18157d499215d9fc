# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The collection's pure-Python statistics against scipy (the oracle, installed for the tests only) and published tables."""

from __future__ import annotations

import math
import random

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils import _stats as st

np = pytest.importorskip("numpy")
stats = pytest.importorskip("scipy.stats")

REL = 1e-9


def close(a, b, rel=1e-9, abs_=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


# ------------------------------------------------------------- normal


@pytest.mark.parametrize("x", [-8.0, -3.2, -1.0, 0.0, 0.5, 1.96, 4.0, 9.0])
def test_normal_cdf_sf(x):
    assert close(st.norm_cdf(x), stats.norm.cdf(x), 1e-12)
    assert close(st.norm_sf(x), stats.norm.sf(x), 1e-12)


@pytest.mark.parametrize("p", [1e-9, 0.001, 0.05, 0.5, 0.9, 0.975, 0.999999])
def test_normal_ppf(p):
    assert close(st.norm_ppf(p), stats.norm.ppf(p), 1e-9)


def test_normal_ppf_refuses_bounds():
    with pytest.raises(st.StatsError):
        st.norm_ppf(1.0)


# -------------------------------------------------------- descriptive


@pytest.mark.parametrize("q", [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0])
@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_quantile_matches_numpy_linear(q, n):
    rng = random.Random(n)
    values = [rng.lognormvariate(5, 0.4) for _i in range(n)]
    assert close(st.quantile(values, q), float(np.quantile(values, q)), 1e-12)


def test_quantile_errors():
    with pytest.raises(st.StatsError):
        st.quantile([], 0.5)
    with pytest.raises(st.StatsError):
        st.quantile([1.0], 1.5)


def test_thin_keeps_shape_and_extremes():
    values = list(range(10_001))
    kept = st.thin(values, 101)
    assert len(kept) == 101 and kept[0] == 0 and kept[-1] == 10_000
    assert kept[50] == 5000
    assert st.thin([3, 1, 2], 10) == [1, 2, 3]
    assert st.thin([1, 2, 3], 0) == []


def test_midranks_and_ties():
    ranks, ties = st.rank([10, 20, 20, 5, 20])
    assert ranks == list(stats.rankdata([10, 20, 20, 5, 20]))
    assert ties == [3]


# ----------------------------------------------------------- binomial


@pytest.mark.parametrize("k,n,p", [(0, 10, 0.5), (3, 10, 0.5), (10, 10, 0.5), (7, 20, 0.3), (0, 50, 0.02),
                                   (12, 12, 0.5), (40, 1500, 0.03), (2, 5, 0.9)])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_binom_test_matches_scipy(k, n, p, alternative):
    expected = stats.binomtest(k, n, p, alternative=alternative).pvalue
    assert close(st.binom_test(k, n, p, alternative), expected, 1e-8)


def test_binom_test_edges():
    assert st.binom_test(0, 0) == 1.0
    with pytest.raises(st.StatsError):
        st.binom_test(5, 3)
    with pytest.raises(st.StatsError):
        st.binom_test(1, 3, alternative="bigger")


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (5, 0), (12, 0), (6, 2), (3, 3), (10, 25), (40, 20)])
def test_mcnemar_exact_is_binomial_on_discordant_pairs(b, c):
    result = st.mcnemar_exact(b, c)
    n = b + c
    one = stats.binomtest(b, n, 0.5, alternative="greater").pvalue if n else 1.0
    two = stats.binomtest(b, n, 0.5).pvalue if n else 1.0
    assert close(result["p_value"], one, 1e-9) and close(result["p_value_two_sided"], two, 1e-9)
    assert result["discordant"] == n


def test_mcnemar_published_value():
    # All of 5 discordant pairs one way: p = 0.5 ** 5 one-sided, 2 * that two-sided.
    result = st.mcnemar_exact(5, 0)
    assert close(result["p_value"], 0.03125) and close(result["p_value_two_sided"], 0.0625)


# -------------------------------------------------------- proportions


@pytest.mark.parametrize("table", [[[8, 2], [1, 5]], [[0, 60], [0, 60]], [[18, 42], [0, 60]], [[3, 57], [1, 59]],
                                   [[1, 9], [11, 3]], [[100, 900], [80, 920]], [[5, 0], [0, 5]], [[0, 5], [5, 0]]])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_fisher_exact_matches_scipy(table, alternative):
    expected = stats.fisher_exact(table, alternative=alternative).pvalue
    assert close(st.fisher_exact(table, alternative), expected, 1e-8)


def test_fisher_published_value():
    # The tea-tasting experiment (Fisher 1935): 3 of 4 right; one-sided p = 17/70.
    assert close(st.fisher_exact([[3, 1], [1, 3]], "greater"), 17 / 70)


@pytest.mark.parametrize("x1,n1,x2,n2", [(0, 60, 18, 60), (5, 100, 9, 100), (30, 1000, 45, 1000), (3, 40, 0, 40),
                                         (10, 50, 10, 50)])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_two_proportion_ztest_matches_scipy(x1, n1, x2, n2, alternative):
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    expected = {"greater": stats.norm.sf(z), "less": stats.norm.cdf(z), "two-sided": 2 * stats.norm.sf(abs(z))}
    got_z, got_p = st.two_proportion_ztest(x1, n1, x2, n2, alternative)
    assert close(got_z, z, 1e-12) and close(got_p, expected[alternative], 1e-9)


def test_two_proportion_ztest_without_variance():
    assert st.two_proportion_ztest(0, 50, 0, 50, "greater") == (0.0, 1.0)


@pytest.mark.parametrize("x,n", [(0, 10), (1, 10), (5, 10), (10, 10), (81, 263), (0, 60), (3, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_scipy(x, n, confidence):
    ci = stats.binomtest(x, n).proportion_ci(confidence, method="wilson")
    low, high = st.wilson_interval(x, n, confidence)
    assert close(low, ci.low, 1e-9, 1e-12) and close(high, ci.high, 1e-9, 1e-12)


@pytest.mark.parametrize("x1,n1,x2,n2,low,high", [
    # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10 (hybrid score), 95%:
    # each row there is p1 - p2 with the larger proportion first, here x2/n2 - x1/n1.
    (48, 80, 56, 70, 0.0524, 0.3339),
    (3, 10, 9, 10, 0.1705, 0.8090),
    (0, 29, 5, 56, -0.0381, 0.1926),
    (0, 20, 0, 10, -0.1611, 0.2775),
    (0, 20, 10, 10, 0.6791, 1.0),
])
def test_newcombe_published_values(x1, n1, x2, n2, low, high):
    got_low, got_high = st.newcombe_interval(x1, n1, x2, n2, 0.95)
    assert round(got_low, 4) == pytest.approx(low, abs=1e-4) and round(got_high, 4) == pytest.approx(high, abs=1e-4)


@pytest.mark.parametrize("x1,n1,x2,n2", [(0, 60, 0, 60), (0, 60, 18, 60), (7, 300, 12, 280)])
def test_newcombe_is_built_from_scipy_wilson_bounds(x1, n1, x2, n2):
    w1 = stats.binomtest(x1, n1).proportion_ci(0.9, method="wilson")
    w2 = stats.binomtest(x2, n2).proportion_ci(0.9, method="wilson")
    p1, p2 = x1 / n1, x2 / n2
    low = p2 - p1 - math.sqrt((p2 - w2.low) ** 2 + (w1.high - p1) ** 2)
    high = p2 - p1 + math.sqrt((w2.high - p2) ** 2 + (p1 - w1.low) ** 2)
    got = st.newcombe_interval(x1, n1, x2, n2, 0.9)
    assert close(got[0], low, 1e-9, 1e-12) and close(got[1], high, 1e-9, 1e-12)


# ------------------------------------------------------ rank-based tests


def samples(seed, n1, n2, shift=1.0, ties=False):
    rng = random.Random(seed)
    x = [rng.lognormvariate(5, 0.3) * shift for _i in range(n1)]
    y = [rng.lognormvariate(5, 0.3) for _i in range(n2)]
    if ties:
        x = [round(v, -1) for v in x]
        y = [round(v, -1) for v in y]
    return x, y


@pytest.mark.parametrize("seed,n1,n2,shift,ties", [(1, 30, 40, 1.0, False), (2, 60, 60, 1.3, False),
                                                   (3, 50, 20, 0.8, True), (4, 200, 150, 1.05, True),
                                                   (5, 9, 12, 1.2, False)])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_mann_whitney_asymptotic_matches_scipy(seed, n1, n2, shift, ties, alternative):
    x, y = samples(seed, n1, n2, shift, ties)
    expected = stats.mannwhitneyu(x, y, alternative=alternative, method="asymptotic", use_continuity=True)
    got = st.mann_whitney_u(x, y, alternative, method="asymptotic")
    assert close(got["u"], expected.statistic, 1e-12) and close(got["p_value"], expected.pvalue, 1e-9)


@pytest.mark.parametrize("n1,n2", [(3, 4), (5, 5), (8, 7), (2, 8)])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_mann_whitney_exact_matches_scipy(n1, n2, alternative):
    x, y = samples(n1 * 10 + n2, n1, n2, 1.2)
    expected = stats.mannwhitneyu(x, y, alternative=alternative, method="exact")
    got = st.mann_whitney_u(x, y, alternative, method="auto")
    assert got["method"] == "exact"
    assert close(got["p_value"], expected.pvalue, 1e-9)


def test_mann_whitney_exact_refuses_ties():
    with pytest.raises(st.StatsError):
        st.mann_whitney_u([1, 2, 2], [2, 3], method="exact")
    assert st.mann_whitney_u([1, 2, 2], [2, 3])["method"] == "asymptotic"


@pytest.mark.parametrize("seed,n,shift", [(1, 12, 0.0), (2, 25, 0.2), (3, 40, -0.1), (4, 50, 0.05)])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_wilcoxon_exact_matches_scipy(seed, n, shift, alternative):
    rng = random.Random(seed)
    d = [rng.gauss(shift, 0.3) for _i in range(n)]
    expected = stats.wilcoxon(d, alternative=alternative, method="exact")
    got = st.wilcoxon_signed_rank(d, alternative)
    assert got["method"] == "exact"
    assert close(got["p_value"], expected.pvalue, 1e-9)


@pytest.mark.parametrize("seed,n,shift", [(1, 80, 0.0), (2, 120, 0.05), (3, 30, 0.1)])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_wilcoxon_asymptotic_with_ties_matches_scipy(seed, n, shift, alternative):
    rng = random.Random(seed)
    d = [round(rng.gauss(shift, 0.3), 1) for _i in range(n)]  # ties and zeros
    expected = stats.wilcoxon(d, alternative=alternative, method="approx", zero_method="wilcox", correction=False)
    got = st.wilcoxon_signed_rank(d, alternative, method="asymptotic")
    assert close(got["p_value"], expected.pvalue, 1e-9)


def test_wilcoxon_all_zero():
    assert st.wilcoxon_signed_rank([0, 0, 0])["p_value"] == 1.0


def test_median_bounds_cover_at_the_binomial_order_statistic():
    values = list(range(1, 36))  # n = 35
    upper = st.median_upper_bound(values, 0.95)
    # The smallest k with P(Binomial(35, 1/2) <= k - 1) >= 0.95.
    k = next(k for k in range(1, 36) if stats.binom.cdf(k - 1, 35, 0.5) >= 0.95)
    assert upper == values[k - 1]
    assert st.median_lower_bound(values, 0.95) == values[35 - k]
    assert st.median_upper_bound([1.0, 2.0], 0.95) is None


# ----------------------------------------------------------- bootstrap


def test_bootstrap_is_reproducible_and_covers_the_truth():
    rng = random.Random(7)
    a = [rng.lognormvariate(5, 0.25) for _i in range(300)]
    b = [rng.lognormvariate(5, 0.25) * 2 for _i in range(300)]
    ci1 = st.bootstrap_ci(a, b, st.quantile_ratio(0.5), 0.9, 500, seed=3)
    ci2 = st.bootstrap_ci(a, b, st.quantile_ratio(0.5), 0.9, 500, seed=3)
    assert ci1 == ci2
    assert ci1[0] < 2.0 < ci1[1] and ci1[1] - ci1[0] < 0.5
    assert st.bootstrap_ci(a, b, st.quantile_ratio(0.5), 0.9, 500, seed=4) != ci1


def test_bootstrap_p99_ratio_agrees_with_scipy_percentile_bootstrap():
    rng = random.Random(11)
    a = [rng.lognormvariate(5, 0.25) for _i in range(200)]
    b = [rng.lognormvariate(5, 0.25) * (8 if rng.random() < 0.1 else 1) for _i in range(200)]
    ours = st.bootstrap_ci(a, b, st.quantile_ratio(0.99), 0.9, 2000, seed=1)
    theirs = stats.bootstrap((a, b), lambda x, y: np.quantile(y, 0.99) / np.quantile(x, 0.99), confidence_level=0.9,
                             n_resamples=2000, method="percentile", vectorized=False,
                             rng=np.random.default_rng(1)).confidence_interval
    # Different random streams: the bounds agree to Monte Carlo error.
    assert ours[0] == pytest.approx(theirs.low, rel=0.15) and ours[1] == pytest.approx(theirs.high, rel=0.15)
    assert ours[0] > 1.5


def test_ratio_of_sums_interval():
    base = [(80.0, 100.0)] * 30
    same = st.paired_ratio_of_sums_ci(base, base, 0.9, 200)
    assert same == (1.0, 1.0)
    low = [(3.0, 100.0)] * 30
    ci = st.paired_ratio_of_sums_ci(base, low, 0.9, 200)
    assert ci[1] < 0.05
    assert st.ratio_of_sums([(1, 4), (1, 4)]) == 0.25 and st.ratio_of_sums([(0, 0)]) is None


def test_more_needed_finds_the_smallest():
    assert st.more_needed(lambda m: m >= 137) == 137
    assert st.more_needed(lambda m: True) == 0
    assert st.more_needed(lambda m: False, most=1000) is None
