"""Measurements along trajectories (tdjax._src.metrics) against explicit loops in Python/NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tdjax

N, X, D, H = 3, 2, 4, 5
W = 2 * X + 1


def _value(p, x):
    return jnp.dot(p["w"], jnp.tanh(p["V"] @ x + p["b"]))


def _loss(p, ex):  # regression on a scalar target, one example
    return 0.5 * (_value(p, ex["x"]) - ex["y"]) ** 2


def _eval_loss(p, ex):  # another measured loss, as Fig. 3 measures L_QL after regression updates
    return (_value(p, ex["x"]) - 2.0 * ex["y"]) ** 2


@pytest.fixture(scope="module")
def problem():
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    params = {"V": jax.random.normal(k[0], (H, D)), "b": jax.random.normal(k[1], (H,)) * 0.1,
              "w": jax.random.normal(k[2], (H,))}
    nb = {"x": jax.random.normal(k[3], (N, W, D)), "y": jax.random.normal(k[4], (N, W))}
    update = jax.tree.map(lambda a: a[:, X], nb)
    mask = np.ones((N, W), bool)
    mask[0, :1] = False  # sample 0 sits one step after an episode start
    mask[2, -2:] = False  # sample 2 sits at an episode end
    # A real Adam state: a few steps on other data first.
    opt = optax.adam(1e-2)
    state = opt.init(params)
    for i in range(2):
        g = _grad_loss(params, {"x": jnp.ones(D) * i, "y": jnp.asarray(1.0)})
        _, state = opt.update(g, state, params)
    return params, opt, state, update, nb, jnp.asarray(mask)


_grad_loss = jax.jit(jax.grad(_loss))
_grad_eval = jax.jit(jax.grad(_eval_loss))
_jit_loss, _jit_eval = jax.jit(_loss), jax.jit(_eval_loss)


def _example(nb, i, j):
    return jax.tree.map(lambda a: a[i, j], nb)


def _ref_gain(params, opt, state, update, nb, mask, eval_fn, batch):
    before = np.array([[float(eval_fn(params, _example(nb, i, j))) for j in range(W)] for i in range(N)])
    if batch:
        g = jax.grad(lambda p: sum(_loss(p, jax.tree.map(lambda a: a[i], update)) for i in range(N)) / N)(params)
        u, _ = opt.update(g, state, params)
        new = [optax.apply_updates(params, u)] * N
    else:
        new = []
        for i in range(N):  # one explicit optimizer step per update sample
            u, _ = opt.update(_grad_loss(params, jax.tree.map(lambda a: a[i], update)), state, params)
            new.append(optax.apply_updates(params, u))
    after = np.array([[float(eval_fn(new[i], _example(nb, i, j))) for j in range(W)] for i in range(N)])
    gain = np.where(mask, before - after, 0.0)
    return gain, gain.sum(0) / np.asarray(mask).sum(0)


@pytest.mark.parametrize("update,eval_fn,chunk", [("per_sample", None, None), ("batch", None, None),
                                                  ("per_sample", _eval_loss, 2)])
def test_loss_change_matches_explicit_steps(problem, update, eval_fn, chunk):
    params, opt, state, upd, nb, mask = problem
    fn = jax.jit(lambda p, s: tdjax.loss_change_by_offset(_loss, p, opt, s, upd, nb, mask, eval_loss_fn=eval_fn,
                                                          update=update, chunk_size=chunk))
    out = fn(params, state)
    ref_eval = _jit_loss if eval_fn is None else _jit_eval
    ref, ref_mean = _ref_gain(params, opt, state, upd, nb, mask, ref_eval, update == "batch")
    np.testing.assert_allclose(out.per_sample, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.mean, ref_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(out.offsets, np.arange(-X, X + 1))
    np.testing.assert_array_equal(out.count, np.asarray(mask).sum(0))
    assert float(out.per_sample[0, 0]) == 0.0  # masked


def _flat_grad(grad_fn, p, ex):
    return np.concatenate([np.ravel(v) for v in jax.tree.leaves(grad_fn(p, ex))])


def test_interference_and_stiffness_match_numpy(problem):
    params, _, _, upd, nb, mask = problem
    rho = jax.jit(lambda p: tdjax.interference_by_offset(_loss, p, upd, nb, mask, eval_loss_fn=_eval_loss))(params)
    cos = jax.jit(lambda p: tdjax.stiffness_by_offset(_loss, p, upd, nb, mask, chunk_size=2))(params)
    sgn = tdjax.stiffness_by_offset(_loss, params, upd, nb, mask, sign=True)
    ref_rho, ref_cos = np.zeros((N, W)), np.zeros((N, W))
    for i in range(N):
        gt = _flat_grad(_grad_loss, params, jax.tree.map(lambda a: a[i], upd))
        for j in range(W):
            if mask[i, j]:
                ref_rho[i, j] = gt @ _flat_grad(_grad_eval, params, _example(nb, i, j))
                gn = _flat_grad(_grad_loss, params, _example(nb, i, j))
                ref_cos[i, j] = gt @ gn / (np.linalg.norm(gt) * np.linalg.norm(gn))
    np.testing.assert_allclose(rho.per_sample, ref_rho, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cos.per_sample, ref_cos, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cos.per_sample[:, X], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(sgn.per_sample, np.sign(ref_cos))
    np.testing.assert_allclose(cos.mean, ref_cos.sum(0) / np.asarray(mask).sum(0), rtol=1e-4)


def test_gain_is_lr_times_interference_to_first_order(problem):
    params, _, _, upd, nb, mask = problem
    lr = 1e-4
    opt = optax.sgd(lr)
    gain = tdjax.loss_change_by_offset(_loss, params, opt, opt.init(params), upd, nb, mask)
    rho = tdjax.interference_by_offset(_loss, params, upd, nb, mask)
    # float32 loss differences of size lr·ρ: compare to 1% of the largest ρ (a wrong sign or factor fails).
    scale = float(np.max(np.abs(rho.per_sample)))
    np.testing.assert_allclose(gain.per_sample / lr, rho.per_sample, rtol=2e-2, atol=1e-2 * scale)


def test_empty_offset_mean_is_nan(problem):
    params, opt, state, upd, nb, _ = problem
    mask = jnp.ones((N, W), bool).at[:, 0].set(False)
    out = tdjax.loss_change_by_offset(_loss, params, opt, state, upd, nb, mask)
    assert np.isnan(out.mean[0]) and int(out.count[0]) == 0 and np.all(np.isfinite(out.mean[1:]))


def test_bad_input_names_the_argument(problem):
    params, opt, state, upd, nb, mask = problem
    with pytest.raises(ValueError, match="loss_fn"):  # not per-example: a vector per example
        tdjax.stiffness_by_offset(lambda p, ex: _value(p, ex["x"]) * jnp.ones(2), params, upd, nb, mask)
    with pytest.raises(ValueError, match="loss_fn"):
        tdjax.loss_change_by_offset(lambda p, ex: jnp.ones(2), params, opt, state, upd, nb, mask)
    with pytest.raises(ValueError, match="odd window"):
        tdjax.loss_change_by_offset(_loss, params, opt, state, upd,
                                    jax.tree.map(lambda a: a[:, :4], nb), mask[:, :4])
    with pytest.raises(ValueError, match="odd window"):  # a window of 0 neighbours
        tdjax.interference_by_offset(_loss, params, upd, jax.tree.map(lambda a: a[:, :1], nb), mask[:, :1])
    with pytest.raises(TypeError, match="mask"):
        tdjax.loss_change_by_offset(_loss, params, opt, state, upd, nb, mask.astype(jnp.float32))
    with pytest.raises(ValueError, match="update_batch"):
        tdjax.loss_change_by_offset(_loss, params, opt, state, jax.tree.map(lambda a: a[:2], upd), nb, mask)
    with pytest.raises(ValueError, match="update"):
        tdjax.loss_change_by_offset(_loss, params, opt, state, upd, nb, mask, update="minibatch")
    with pytest.raises(ValueError, match="features"):
        tdjax.singular_value_spread(jnp.ones((2, 3, 4)))


def test_singular_value_spread_matches_numpy():
    phi = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (12, 5))) @ np.diag([3.0, 1.0, 0.5, 1e-5, 0.0])
    out = jax.jit(tdjax.singular_value_spread)(jnp.asarray(phi))
    s = np.linalg.svd(phi, compute_uv=False) / np.sqrt(12)
    np.testing.assert_allclose(out.singular_values, s, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.relative, s / s[0], rtol=1e-4, atol=1e-6)
    assert int(out.num_above) == 3
    np.testing.assert_allclose(out.spread, s.sum(), rtol=1e-5)
