"""The offline loop (tdjax.train.offline), teachers and datasets: every objective against a NumPy
formula, λ- and Monte-Carlo returns against naive loops, a run against a plain Python loop of optax
steps, save/load round trips, and the bad inputs the issue lists."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tdjax.train import (
    ActorCriticConfig,
    OfflineConfig,
    ValueConfig,
    collect_dataset,
    load_dataset,
    load_teacher,
    make_agent,
    make_train,
    offline_data,
    save_dataset,
    save_teacher,
    teacher_from_params,
)
from tdjax.train import offline as off
from tdjax.train import replay as replay_lib
from tdjax.train import teacher as teacher_lib
from tdjax.train.teacher import TeacherError

VALUE_CFG = ValueConfig(env="CartPole-v1", hidden=(16,), total_steps=400, learning_starts=64, batch_size=16,
                        buffer_size=200)
AC_CFG = ActorCriticConfig(env="CartPole-v1", algo="reinforce", hidden=(16,), num_envs=4, num_steps=8,
                           total_steps=64)


def _init_params(cfg):
    agent = make_agent(cfg)
    return agent, teacher_lib._params_init(agent, jax.random.key(3))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    _, vparams = _init_params(VALUE_CFG)
    _, aparams = _init_params(AC_CFG)
    save_teacher(root / "value_teacher", VALUE_CFG, vparams)
    save_teacher(root / "ac_teacher", AC_CFG, aparams)
    teacher = load_teacher(root / "value_teacher")
    ds, info = collect_dataset(teacher, 24, jax.random.key(0), epsilon=0.5)
    save_dataset(root / "dstar", ds, info)
    return root


def _cfg(files, objective, teacher="value_teacher", **kw):
    base = dict(teacher=str(files / teacher) if teacher else "", dataset=str(files / "dstar"), objective=objective,
                network="mlp", hidden=(8,), num_updates=4, batch_size=8, n_quantiles=4, td_lambda=0.7)
    return OfflineConfig(**dict(base, **kw))


def test_teacher_and_dataset_round_trip(files):
    t = load_teacher(files / "value_teacher")
    _, params = _init_params(VALUE_CFG)
    assert t.kind == "value" and t.config == VALUE_CFG and t.num_actions == 2
    for a, b in zip(jax.tree.leaves(t.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    assert load_teacher(files / "ac_teacher").kind == "actor_critic"
    ds, info = load_dataset(files / "dstar")
    assert info.source == "collected" and info.epsilon == 0.5 and ds.replay.data.action.shape == (24, 4)
    save_dataset(files / "copy", ds, info)
    ds2, info2 = load_dataset(files / "copy")
    assert info2 == info
    for a, b in zip(jax.tree.leaves(ds), jax.tree.leaves(ds2)):
        np.testing.assert_array_equal(a, b)


def test_mc_returns_against_a_loop():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(9, 2)).astype(np.float32)
    done = rng.random((9, 2)) < 0.3
    disc = np.where(done & (rng.random((9, 2)) < 0.5), 0.0, 1.0).astype(np.float32)
    valid = np.ones((9, 2), bool)
    g, c = jax.jit(offline_data.mc_returns, static_argnums=4)(r, disc, done, valid, 0.9)
    for e in range(2):
        acc, complete = 0.0, False
        for t in reversed(range(9)):
            if done[t, e]:
                acc, complete = r[t, e], True
            else:
                acc = r[t, e] + 0.9 * disc[t, e] * acc
            np.testing.assert_allclose(g[t, e], acc, rtol=1e-5)
            assert bool(c[t, e]) == complete


OBJECTIVE_REFS = {
    "value_distillation": lambda q, qt, ex, c: np.sum((q - qt) ** 2),
    "qa_regression": lambda q, qt, ex, c: (q[ex["a"]] - qt[ex["a"]]) ** 2,
    "q_regression": lambda q, qt, ex, c: (q[ex["a"]] - qt[ex["a"]]) ** 2,
    "advantage_regression": lambda q, qt, ex, c: np.sum(((q - q.mean()) - (qt - qt.mean())) ** 2),
    "mc_regression": lambda q, qt, ex, c: (q[ex["a"]] - ex["g"]) ** 2,
    "td_star": lambda q, qt, ex, c: (q[ex["a"]] - (ex["r"] + c.gamma * ex["d"] * ex["qt_next"].max())) ** 2,
    "q_learning": lambda q, qt, ex, c: 0.5 * (ex["r"] + c.gamma * ex["d"] * ex["q_next"].max() - q[ex["a"]]) ** 2,
    "double_dqn": lambda q, qt, ex, c: 0.5 * (ex["r"] + c.gamma * ex["d"] * ex["q_next"][np.argmax(ex["q_next"])]
                                              - q[ex["a"]]) ** 2,
    "td_lambda": lambda q, qt, ex, c: (q[ex["a"]] - ex["glam"]) ** 2,
    "behaviour_cloning": lambda q, qt, ex, c: (-(q - np.log(np.exp(q).sum()))[np.argmax(qt)]
                                               - c.bc_entropy_coef * -np.sum(_softmax(q) * np.log(_softmax(q)))),
}


def _softmax(x):
    z = np.exp(x - x.max())
    return z / z.sum()


@pytest.mark.parametrize("objective", sorted(OBJECTIVE_REFS) + ["policy_distillation", "qr_dqn"])
def test_each_objective_against_numpy(files, objective):
    teacher = "ac_teacher" if objective == "policy_distillation" else "value_teacher"
    agent = make_agent(_cfg(files, objective, teacher=teacher, bc_entropy_coef=0.3, pd_entropy_coef=0.2))
    state = agent.init(jax.random.key(1))
    learner, data = state
    target = jax.tree.map(lambda x: x * 0.5, learner.params)  # a target network that differs from θ
    learner = learner._replace(target_params=target)
    if objective == "td_lambda":
        learner = learner._replace(lambda_return=off.lambda_returns(agent.spec, target, data.dataset))
    t, e = jnp.array([0, 5, 11]), jnp.array([1, 2, 3])
    batch = agent.make_examples(learner, data, t, e)
    losses = jax.jit(jax.vmap(lambda ex: agent.example_loss(learner.params, learner.target_params, ex)))(batch)
    c = agent.config
    q = np.asarray(agent.q_values(learner.params, batch.tr.obs))
    q_next_target = np.asarray(agent.q_values(target, batch.tr.next_obs))
    q_next_online = np.asarray(agent.q_values(learner.params, batch.tr.next_obs))
    t_out = np.asarray(agent.teacher.output_fn()(agent.teacher.params, batch.tr.obs))
    t_next = np.asarray(agent.teacher.output_fn()(agent.teacher.params, batch.tr.next_obs))
    for k in range(3):
        ex = dict(a=int(batch.tr.action[k]), r=float(batch.tr.reward[k]), d=float(batch.tr.discount[k]),
                  g=float(batch.mc_return[k]), glam=float(batch.lambda_return[k]), qt_next=t_next[k],
                  q_next=q_next_target[k])
        if objective == "double_dqn":
            ex["q_next"] = q_next_target[k]
            a_star = int(np.argmax(q_next_online[k]))
            want = 0.5 * (ex["r"] + c.gamma * ex["d"] * q_next_target[k][a_star] - q[k][ex["a"]]) ** 2
        elif objective == "policy_distillation":
            ps, pt = _softmax(q[k]), _softmax(t_out[k])
            want = np.sum(ps * (np.log(ps) - np.log(pt))) + 0.2 * -np.sum(ps * np.log(ps))
        elif objective == "qr_dqn":
            theta = np.asarray(agent.spec.network.apply(learner.params, batch.tr.obs[k]))  # [A, N]
            theta_next = np.asarray(agent.spec.network.apply(target, batch.tr.next_obs[k]))
            a_star = int(np.argmax(theta_next.mean(-1)))
            target_q = ex["r"] + c.gamma * ex["d"] * theta_next[a_star]  # [N]
            n = theta.shape[1]
            taus = (np.arange(n) + 0.5) / n
            u = target_q[None, :] - theta[ex["a"]][:, None]  # [N_pred, N_target]
            huber = np.where(np.abs(u) <= 1.0, 0.5 * u ** 2, np.abs(u) - 0.5)
            want = np.sum(np.mean(np.abs(taus[:, None] - (u < 0)) * huber, axis=1))
        else:
            want = OBJECTIVE_REFS[objective](q[k], t_out[k], ex, c)
        np.testing.assert_allclose(losses[k], want, rtol=2e-4, atol=1e-6, err_msg=objective)


def test_lambda_returns_against_a_backward_loop(files):
    agent = make_agent(_cfg(files, "td_lambda", teacher=""))
    learner, data = agent.init(jax.random.key(2))
    g = np.asarray(jax.jit(lambda p, d: off.lambda_returns(agent.spec, p, d))(learner.params, data.dataset))
    d = data.dataset.replay.data
    v = np.asarray(agent.q_values(learner.params, d.next_obs)).max(-1)
    lam, gamma = agent.config.td_lambda, agent.config.gamma
    cap, num_envs = d.action.shape
    for e in range(num_envs):
        acc = v[cap - 1, e]
        for t in reversed(range(cap)):
            end = bool(d.done[t, e])
            disc = gamma * float(d.discount[t, e])
            nxt = v[t, e] if (end or t == cap - 1) else (1 - lam) * v[t, e] + lam * acc
            acc = float(d.reward[t, e]) + disc * nxt
            np.testing.assert_allclose(g[t, e], acc, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target_ema", [0.0, 0.3])
def test_run_equals_a_python_loop_of_optax_steps(files, target_ema):
    """Copies of θ into θ⁻ every 2 updates, or (target_ema = τ) θ⁻ ← (1 − τ)θ⁻ + τθ after every update."""
    cfg = _cfg(files, "q_learning", teacher="", num_updates=3, target_update_interval=2, lr=1e-2,
               target_ema=target_ema)
    agent = make_agent(cfg)
    state = agent.init(jax.random.key(4))
    final, metrics = jax.jit(make_train(cfg))(jax.random.key(4))
    learner, data = state
    opt = agent.optimizer
    for i in range(cfg.num_updates):
        _, k_sample, _ = jax.random.split(jax.random.fold_in(data.key, i), 3)
        t, e = off.sample_slots(data, k_sample, cfg.batch_size)
        batch = agent.make_examples(learner, data, t, e)

        def mean_loss(p):
            return jnp.mean(jax.vmap(lambda ex: agent.example_loss(p, learner.target_params, ex))(batch))

        loss, grads = jax.value_and_grad(mean_loss)(learner.params)
        np.testing.assert_allclose(metrics.loss[i], loss, rtol=1e-5)
        updates, opt_state = opt.update(grads, learner.opt_state, learner.params)
        learner = learner._replace(params=optax.apply_updates(learner.params, updates), opt_state=opt_state)
        if target_ema:
            learner = learner._replace(target_params=jax.tree.map(
                lambda p, q: target_ema * p + (1 - target_ema) * q, learner.params, learner.target_params))
        elif (i + 1) % cfg.target_update_interval == 0:
            learner = learner._replace(target_params=learner.params)
    for a, b in zip(jax.tree.leaves((final.learner.params, final.learner.target_params)),
                    jax.tree.leaves((learner.params, learner.target_params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_inputs_fail_before_compiling(files, tmp_path):
    with pytest.raises(ValueError, match="objective.*unknown value"):
        make_agent(_cfg(files, "distil_everything"))
    with pytest.raises(ValueError, match="actor-critic agent"):
        make_agent(_cfg(files, "value_distillation", teacher="ac_teacher"))
    with pytest.raises(ValueError, match="without a policy network"):
        make_agent(_cfg(files, "policy_distillation"))
    with pytest.raises(ValueError, match="OfflineConfig.teacher.*needs a teacher"):
        make_agent(_cfg(files, "behaviour_cloning", teacher=""))
    with pytest.raises(TeacherError, match="no saved teacher"):
        make_agent(_cfg(files, "value_distillation", teacher="nowhere"))
    with pytest.raises(offline_data.DatasetError, match="no saved dataset"):
        make_agent(_cfg(files, "value_distillation", dataset=str(tmp_path / "nothing")))
    with pytest.raises(ValueError, match="td_lambda.*λ must lie in"):
        make_agent(_cfg(files, "td_lambda", teacher="", td_lambda=1.5))
    with pytest.raises(ValueError, match="target_ema.*τ must lie in"):
        make_agent(_cfg(files, "q_learning", teacher="", target_ema=1.5))
    with pytest.raises(ValueError, match="target_ema.*λ-returns"):
        make_agent(_cfg(files, "td_lambda", teacher="", target_ema=0.01))
    with pytest.raises(ValueError, match="collect.*FIXED dataset"):
        make_agent(_cfg(files, "mc_regression", collect=True))
    # a teacher saved with another network: its config now builds a wider torso
    meta = json.loads((files / "value_teacher" / "teacher.json").read_text())
    meta["config"]["hidden"] = [32]
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "teacher.json").write_text(json.dumps(meta))
    (tmp_path / "t" / "params.npz").write_bytes((files / "value_teacher" / "params.npz").read_bytes())
    with pytest.raises(TeacherError, match="saved with another network"):
        load_teacher(tmp_path / "t")
    _, params = _init_params(VALUE_CFG)
    with pytest.raises(TeacherError, match="another network"):
        teacher_from_params(VALUE_CFG.replace(hidden=(8,)), params)
    # a dataset whose observations do not match the teacher's
    other = ValueConfig(env="Acrobot-v1", hidden=(16,), total_steps=400, learning_starts=64, batch_size=16,
                        buffer_size=200)
    x = jnp.zeros((1, 6))
    tr = replay_lib.Transition(obs=x, action=jnp.zeros(1, jnp.int32), reward=jnp.zeros(1), discount=jnp.ones(1),
                               next_obs=x, done=jnp.zeros(1, bool), valid=jnp.ones(1, bool))
    buf = replay_lib.add(replay_lib.init(jax.tree.map(lambda a: a[0], tr), 4, 1), tr)
    ds, info = offline_data.dataset_from_replay(buf, env=other.env, num_actions=3, gamma=0.99)
    save_dataset(tmp_path / "acrobot", ds, info)
    with pytest.raises(ValueError, match="OfflineConfig.dataset.*observations are \\(6,\\)"):
        make_agent(_cfg(files, "value_distillation", dataset=str(tmp_path / "acrobot")))


def test_td_lambda_and_lr_as_data_equal_configured_runs(files):
    """λ and the learning rate of a td_lambda student as data (one vmapped program for the sweep)
    equal runs configured with them; the initial G^λ are those of that λ."""
    from tdjax.train import seeds as seeds_lib

    cfg = _cfg(files, "td_lambda", teacher="", num_updates=6, target_update_interval=3, lr=1e-2)
    lams, lrs = [0.0, 0.95], [1e-2, 3e-3]
    runner = seeds_lib.make_seed_runner(cfg, 2)
    state = runner.init(jax.random.key(5), seeds_per_value=1, td_lambda=jnp.array(lams), lr=jnp.array(lrs))
    ref_agent = make_agent(cfg.replace(td_lambda=lams[1], lr=lrs[1]))
    ref0 = ref_agent.init(jax.random.split(jax.random.key(5), 1)[0])
    np.testing.assert_allclose(state.learner.lambda_return[1], ref0.learner.lambda_return, rtol=1e-6)
    state, m = runner.run(state, 0, cfg.num_updates)
    key0 = jax.random.split(jax.random.key(5), 1)[0]
    for s in range(2):
        want, wm = jax.jit(make_train(cfg.replace(td_lambda=lams[s], lr=lrs[s])))(key0)
        np.testing.assert_allclose(m.loss[s], wm.loss, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(state.learner.lambda_return[s], want.learner.lambda_return, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"td_lambda must lie in \[0.0, 1.0\]"):
        runner.init(jax.random.key(5), td_lambda=jnp.array([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"td_lambda is only data for objective='td_lambda'"):
        make_agent(_cfg(files, "q_learning", teacher="")).set_hyperparams(None, td_lambda=0.5)
