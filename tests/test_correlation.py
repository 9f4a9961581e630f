"""interference_gap_correlation / pearson_r against scipy.stats.pearsonr and a NumPy bootstrap."""

import warnings

import jax
import numpy as np
import pytest
import scipy.stats

import tdjax


def _runs(n, seed=0, sign=1.0):
    rng = np.random.default_rng(seed)
    rho = np.exp(rng.normal(size=n))
    gap = sign * 0.5 * np.log(rho) + 0.3 * rng.normal(size=n)
    return rho.astype(np.float32), gap.astype(np.float32)


def _numpy_bootstrap(x, y, idx, confidence):
    rs = []
    for row in idx:
        xs, ys = x[row], y[row]
        if np.ptp(xs) == 0 or np.ptp(ys) == 0:
            continue
        rs.append(scipy.stats.pearsonr(xs, ys).statistic)
    rs = np.asarray(rs)
    return np.quantile(rs, [(1 - confidence) / 2, (1 + confidence) / 2]), len(rs)


@pytest.mark.parametrize("n,sign,jit", [(5, 1.0, False), (24, -1.0, True)])
def test_against_scipy_and_numpy_bootstrap(jit, n, sign):
    rho, gap = _runs(n, seed=n, sign=sign)
    key = jax.random.key(3)
    fn = lambda r, g, k: tdjax.interference_gap_correlation(r, g, k, num_resamples=200, confidence=0.9)
    out = jax.jit(fn)(rho, gap, key) if jit else fn(rho, gap, key)
    x = np.log(rho.astype(np.float64))
    np.testing.assert_allclose(out.r, scipy.stats.pearsonr(x, gap).statistic, atol=2e-5)
    assert np.sign(out.r) == sign
    idx = np.asarray(jax.random.randint(key, (200, n), 0, n))
    (lo, hi), valid = _numpy_bootstrap(x, gap.astype(np.float64), idx, 0.9)
    np.testing.assert_allclose([out.low, out.high], [lo, hi], atol=5e-5)
    assert int(out.valid_resamples) == valid
    assert out.low <= out.r <= out.high


def test_pearson_r_batched_and_log_false():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(3, 10)), rng.normal(size=(3, 10))
    got = jax.jit(tdjax.pearson_r)(x, y)
    np.testing.assert_allclose(got, [scipy.stats.pearsonr(a, b).statistic for a, b in zip(x, y)], atol=1e-6)
    rho, gap = _runs(8)
    out = tdjax.interference_gap_correlation(rho, gap, jax.random.key(0), num_resamples=10, log=False)
    np.testing.assert_allclose(out.r, scipy.stats.pearsonr(rho, gap).statistic, atol=1e-5)


def test_bad_input():
    rho, gap = _runs(6)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="lengths 6 and 5"):
        tdjax.interference_gap_correlation(rho, gap[:5], key)
    with pytest.raises(ValueError, match="at least 3 runs"):
        tdjax.interference_gap_correlation(rho[:2], gap[:2], key)
    with pytest.raises(ValueError, match=r"must be > 0 to take its log; runs \[2\]"):
        tdjax.interference_gap_correlation(np.where(np.arange(6) == 2, 0.0, rho), gap, key)
    with pytest.raises(ValueError, match="1-D"):
        tdjax.interference_gap_correlation(rho[None], gap[None], key)
    with pytest.raises(ValueError, match="num_resamples"):
        tdjax.interference_gap_correlation(rho, gap, key, num_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        tdjax.interference_gap_correlation(rho, gap, key, confidence=90)
    with pytest.warns(RuntimeWarning, match="`gap` is constant"):
        out = tdjax.interference_gap_correlation(rho, np.ones(6, np.float32), key, num_resamples=10)
    assert np.isnan(out.r) and np.isnan(out.low) and int(out.valid_resamples) == 0
    # under jit nothing can be checked: a non-positive ρ̄ gives NaN, never a number
    out = jax.jit(lambda r: tdjax.interference_gap_correlation(r, gap, key, num_resamples=10))(
        np.where(np.arange(6) == 2, -1.0, rho).astype(np.float32))
    assert np.isnan(out.r) and np.isnan(out.low) and np.isnan(out.high)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tdjax.interference_gap_correlation(rho, gap, key, num_resamples=10)
