"""tdjax.train.sweep: a tiny 2×1×2×2 grid, vmapped == looped == single runs, cut and resumed, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from experiments import _bengio20_grid
from tdjax.train import ActorCriticConfig, ValueConfig, make_agent, sweep
from tdjax.train import supervised as sup

# The tiny experiment grid's classification task: its programs are compiled once per test session.
BASE, GRID = _bengio20_grid.task_base(_bengio20_grid.tiny(), "classification")
KEY = jax.random.key(0)


def _frame(rows):
    cols = ["n_hidden", "n_layers", "n_train", "lr", "seed", "train_perf", "test_perf", "gap", "rho_bar"]
    return pd.DataFrame(rows)[cols].sort_values(cols[:5]).reset_index(drop=True)


def test_grid_resume_and_vmapped_equals_looped(tmp_path):
    path = tmp_path / "grid.csv"
    calls = []
    # cut after the first capacity (program): part 0 of 2 runs capacity n_h=4 only
    first = sweep.run_grid(BASE, GRID, KEY, str(path), part=(0, 2))
    assert GRID.n_hidden == (4, 8) and GRID.n_train == (8, 32) and GRID.seeds == 2
    assert {r["n_hidden"] for r in first} == {4} and len(first) == 4
    rows = sweep.run_grid(BASE, GRID, KEY, str(path), progress=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 2), (2, 2)] and len(rows) == 8
    table = pd.read_csv(path)
    assert list(table.columns) == list(sweep.COLUMNS) and len(table) == 8
    assert table.label.str.contains("synthetic").all()
    # resuming a finished grid trains nothing and returns the same rows
    again = sweep.run_grid(BASE, GRID, KEY, str(path))
    pd.testing.assert_frame_equal(_frame(again), _frame(rows))
    # one by one (the same code, batches of one) gives the same numbers
    looped = sweep.run_grid(BASE, GRID.replace(n_hidden=(4,)), KEY, None, vmapped=False)
    pd.testing.assert_frame_equal(_frame(looped), _frame(first), rtol=1e-4, atol=1e-5)
    # and a cell equals the single run of make_train with that cell's config and key
    cell = table[(table.n_hidden == 4) & (table.n_train == 8) & (table.seed == 1)].iloc[0]
    cfg = BASE.replace(n_hidden=4, n_train=8)
    _, m = jax.jit(lambda k: make_agent(cfg).run(make_agent(cfg).init(k), 0, cfg.num_updates))(
        jax.random.fold_in(KEY, 1))
    ev = sup.final_evaluation(m)
    np.testing.assert_allclose([cell.gap, cell.rho_bar], [ev.gap, ev.rho_bar], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cell.gap, cell.train_perf - cell.test_perf, atol=1e-6)


def test_bad_grids(tmp_path):
    with pytest.raises(ValueError, match=r"GridConfig.n_train is empty"):
        sweep.run_grid(BASE, GRID.replace(n_train=()), KEY)
    with pytest.raises(ValueError, match=r"GridConfig.seeds=0"):
        sweep.run_grid(BASE, GRID.replace(seeds=0), KEY)
    with pytest.raises(ValueError, match=r"\[999\] exceed the 256 training examples"):
        sweep.run_grid(BASE, GRID.replace(n_train=(4, 999)), KEY)
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        sweep.paper_grid("mnist")
    with pytest.raises(ValueError, match="part must be"):
        sweep.run_grid(BASE, GRID, KEY, part=(2, 2))
    path = tmp_path / "g.csv"
    pd.DataFrame([dict.fromkeys(sweep.COLUMNS, 0) | {"config_id": "other"}]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="rows of another config"):
        sweep.run_grid(BASE, GRID, KEY, str(path))
    assert sweep.paper_grid("svhn").n_train[-1] == 50_000 and sweep.paper_grid("sarcos").n_hidden[-1] == 256


# The agents: a Double DQN grid of one capacity, n_T ∈ {3, 6} × two learning rates × one seed, one program.
DDQN = ValueConfig(env="MaskedImage-digits", algo="double_dqn", cnn_width=2, num_envs=2, total_steps=60,
                   buffer_size=40, batch_size=8, learning_starts=20, target_update_interval=10, eps_decay_steps=40,
                   probe_k=4)
RL_GRID = sweep.GridConfig(n_hidden=(2,), n_layers=(0,), n_train=(3, 6), seeds=1, lrs=(1e-3, 3e-3))
EVAL = 8


def test_ddqn_grid_one_program_equals_configured_runs():
    rows = sweep.run_grid(DDQN, RL_GRID, KEY, eval_images=EVAL)
    assert len(rows) == 4 and sweep._rl_program.cache_info().currsize == 1  # one program for the capacity
    # (vmapped == looped is checked on the supervised grid above; the looped agents' path calls this same
    # program one cell at a time, and compiling it for one cell would cost this test ~40 s more)
    # cell (n_h=2, n_T=3, lr=3e-3, seed 0) against the run configured with num_images=3 and that lr
    cell = next(r for r in rows if r["n_train"] == 3 and r["lr"] == 3e-3)
    assert cell["label"].startswith("MaskedImage-digits[train 0:3]")
    cfg = DDQN.replace(env_options=(("num_images", 3),), lr=3e-3)
    agent = make_agent(cfg)
    key = jax.random.fold_in(KEY, 0)
    state, _ = jax.jit(lambda k: agent.run(agent.init(k), 0, agent.num_iterations))(key)
    # its returns by `play` (one greedy episode per image) on the configured train and test envs, and
    # ρ̄ = the mean off-diagonal entry of the Gram matrix of max_a Q on the 3 images' first observations
    params = state.learner.params
    train_env, test_env = agent.env.env, sweep._masked_envs(cfg)[1]
    greedy = lambda obs: jnp.argmax(agent.q_values(params, obs))
    train_ret = float(np.mean(jax.jit(lambda: train_env.play(greedy).episode_return)()))
    test_ret = float(np.mean(jax.jit(lambda: test_env.play(greedy, jnp.arange(EVAL)).episode_return)()))
    obs0 = jnp.stack([train_env.reset_to(s)[1] for s in range(3)])
    grad = jax.jit(jax.grad(lambda p, x: jnp.max(agent.q_values(p, x))))
    grads = [grad(params, x) for x in obs0]
    flat = np.stack([np.concatenate([np.ravel(g) for g in jax.tree.leaves(gr)]) for gr in grads]).astype(np.float64)
    gram = flat @ flat.T
    rho = (gram.sum() - np.trace(gram)) / 6
    np.testing.assert_allclose([cell["train_perf"], cell["test_perf"]], [train_ret, test_ret], atol=1e-5)
    np.testing.assert_allclose(cell["rho_bar"], rho, rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match=r"n_train=7 must be an integer in \[1, 6\]"):
        make_agent(DDQN.replace(env_options=(("num_images", 6),))).init_with(key, 7)


def test_reinforce_lr_and_n_train_as_data_equal_a_configured_run():
    c = ActorCriticConfig(env="MaskedImage-digits", algo="reinforce", cnn_width=2, num_envs=2, num_steps=10,
                          total_steps=60)  # no test-env evaluation: the pool is the training env's
    key = jax.random.key(3)
    agent = make_agent(c.replace(env_options=(("num_images", 4),), lr=2e-3))
    state, m = jax.jit(lambda k: agent.run(agent.init(k), 0, agent.num_iterations))(key)
    big = make_agent(c.replace(env_options=(("num_images", 9),)))
    pooled, mp = jax.jit(lambda k, n, lr: big.run(big.init_with(k, n, lr), 0, big.num_iterations))(
        key, jnp.int32(4), jnp.float32(2e-3))
    assert big.hyperparams_as_data == ("lr",)
    for a, b in zip(jax.tree.leaves((state.learner.params, m.return_sum)),
                    jax.tree.leaves((pooled.learner.params, mp.return_sum))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert (np.asarray(pooled.actor.env_state.slot) < 4).all()
    with pytest.raises(ValueError, match=r"n_train=0 must be an integer in \[1, 9\]"):
        big.init_with(key, 0)
    with pytest.raises(ValueError, match=r"env='CartPole-v1' has no pool of episode seeds"):
        make_agent(ActorCriticConfig(algo="reinforce", num_envs=2, num_steps=10, total_steps=40)).init_with(key, 3)
    with pytest.raises(ValueError, match=r"cannot take \['td_lambda'\] as data"):
        big.set_hyperparams(pooled, td_lambda=0.5)
