"""The supervised family against a naive Python loop of optax steps, and ρ̄ / gap against direct sums."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tdjax.train import SupervisedConfig, make_agent, make_train
from tdjax.train import supervised as sup

CFG = SupervisedConfig(n_hidden=8, n_layers=1, n_train=6, num_updates=20, eval_interval=10, batch_size=4,
                       probe_k=8, lr=3e-2)


def _naive_eval(agent, params, n_train):
    """Loss/accuracy/gap/ρ̄ by explicit per-example Python loops."""
    spec = agent.spec
    f = lambda p, x: jnp.max(spec.network.apply(p, x))
    grad_f, out_fn = jax.jit(jax.grad(f)), jax.jit(spec.network.apply)
    loss_fn = jax.jit(agent.example_loss)
    xs, ys = np.asarray(spec.x_train[:n_train]), np.asarray(spec.y_train[:n_train])
    xt, yt = np.asarray(spec.x_test), np.asarray(spec.y_test)
    loss = lambda x, y: float(loss_fn(params, x, y))
    tr_loss = np.mean([loss(x, y) for x, y in zip(xs, ys)])
    te_loss = np.mean([loss(x, y) for x, y in zip(xt, yt)])
    grads = [np.concatenate([np.ravel(g) for g in jax.tree.leaves(grad_f(params, x))])
             for x in xs[: min(spec.probe_k, n_train)]]
    k = len(grads)
    rho = np.mean([grads[i] @ grads[j] for i in range(k) for j in range(i + 1, k)])
    if spec.env.task == "classification":
        acc = lambda X, Y: np.mean([np.argmax(out_fn(params, x)) == y for x, y in zip(X, Y)])
        tr_acc, te_acc = acc(xs, ys), acc(xt, yt)
        gap = tr_acc - te_acc
    else:
        tr_acc = te_acc = np.nan
        gap = te_loss - tr_loss
    return np.array([tr_loss, te_loss, tr_acc, te_acc, gap, rho])


@pytest.mark.parametrize("data", ["synthetic_classification", "synthetic_regression"])
def test_loop_equals_naive_optax_loop_and_direct_rho(data):
    cfg = CFG.replace(data=data)
    agent = make_agent(cfg)
    key = jax.random.key(7)
    state, metrics = jax.jit(make_train(cfg))(key)
    # the naive loop: the same init and minibatch indices, one optax step at a time in Python
    s0 = agent.init(key)
    tx = optax.adam(cfg.lr, eps=cfg.adam_eps)
    params, opt = s0.params, tx.init(s0.params)
    spec = agent.spec

    @jax.jit
    def step(params, opt, xs, ys):  # a Python loop over the examples, compiled once
        g = jax.grad(lambda p: sum(agent.example_loss(p, x, y) for x, y in zip(xs, ys)) / len(xs))(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt

    for i in range(cfg.num_updates):
        idx = np.asarray(sup.minibatch(spec, s0, jnp.asarray(i)))
        assert idx.max() < cfg.n_train
        params, opt = step(params, opt, spec.x_train[idx], spec.y_train[idx])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), state.params, params)
    ev = np.asarray(metrics.evaluated)
    assert ev.tolist() == [(i + 1) % 10 == 0 for i in range(20)]
    got = np.array(sup.final_evaluation(metrics), np.float64)
    np.testing.assert_allclose(got, _naive_eval(agent, params, cfg.n_train), rtol=2e-3, atol=2e-4)
    assert np.isnan(np.asarray(metrics.eval.rho_bar)[~ev]).all()


def test_bad_config():
    with pytest.raises(ValueError, match=r"n_train=999.*holds 256 examples"):
        make_agent(CFG.replace(n_train=999))
    with pytest.raises(ValueError, match=r"data='svhm'.*unknown data set"):
        make_agent(CFG.replace(data="svhm"))
    with pytest.raises(ValueError, match=r"num_updates=25.*multiple of eval_interval"):
        make_agent(CFG.replace(num_updates=25))
    with pytest.raises(ValueError, match="optimizer"):
        make_agent(CFG.replace(optimizer="lbfgs"))
