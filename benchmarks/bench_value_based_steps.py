"""Environment steps per second of tdjax's value-based loop (DQN), against a single-purpose baseline.

Everything is timed as the whole training run (acting, replay, one gradient update per iteration),
compilation excluded: each function is compiled first with `.lower().compile()`, then called once
(tables A and B: `--repeats` times, interleaved across the variants being compared, keeping the
fastest). Baselines of every table are measured in the same run. Tables (markdown):

  A. MinAtar Breakout, probes off: tdjax's `jax.jit(jax.vmap(make_train(cfg)))(keys)` for 1, 8, 32
     seeds against `benchmarks/purejaxrl_style_dqn.py` (a single-file, fully jitted DQN in the style
     of PureJaxRL's dqn.py) with exactly the same settings and network; ratio tdjax ÷ baseline
     (≥ 1: tdjax at least as fast).
  B. The same tdjax runs with the probes on (`probe_interval`, `probe_k`); probe cost = 1 − (steps/s
     with probes) ÷ (steps/s without), and the same cost estimated from the seconds per probe of a
     run with dense probes (`--probe-dense-interval`), which is less noisy.
  C. Atari Pong-v5 through envpool (Nature CNN): one `lax.scan` over the run with envpool's XLA
     custom call and with the host callback backend, and host-driven loops (`tdjax.train.run_host_driven`,
     one iteration per call with its static phase, so no `lax.cond` around the update; and a jitted
     `agent.run(state, i, K)` per chunk of K iterations); the environment alone (envpool's own
     host API with random actions, and tdjax's VecEnv inside a jitted scan) as the ceiling.
     A host-driven loop with the update outside any control flow (built from the agent's pieces, not
     a tdjax API) and the Nature CNN written as im2col matmuls (a candidate change, not in tdjax)
     show what the loop could reach.
  D. Cost of ONE Nature-CNN DQN update (batch 32, Adam) at top level, under `lax.cond`, computed
     unconditionally and kept with `jnp.where`, and inside a `lax.scan` of 10 — the XLA:CPU effect that decides
     between C's loop structures — for tdjax's
     NatureTorso and the im2col candidate.

Usage:
  python benchmarks/bench_value_based_steps.py                 # everything (see --help for sizes)
  python benchmarks/bench_value_based_steps.py --quick         # every table, small: ~3-5 min (compiling)
  python benchmarks/bench_value_based_steps.py --tables minatar probes --seeds 1 8
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import purejaxrl_style_dqn as baseline  # noqa: E402

from tdjax.networks import heads  # noqa: E402
from tdjax.train import ValueConfig, make_agent, make_train  # noqa: E402
from tdjax.train import replay as replay_lib  # noqa: E402

TABLES = ("minatar", "probes", "pong", "update")


# ----------------------------------------------------------------------------------------------------
# Helpers.


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(x: float, digits: int = 3) -> str:
    """Rounded to `digits` significant figures, thousands separated."""
    if x != x:  # NaN
        return "–"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:,.{max(digits - 1 - int(np.floor(np.log10(abs(x)))), 0)}f}" if x else "0"


def timed(fn: Callable, *args, repeats: int = 1):
    """(fastest wall seconds, compile seconds, output) of `jax.jit(fn)(*args)`, compilation excluded."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t0)
    return best, compile_s, out


def seed_keys(seeds: int):
    return jax.random.split(jax.random.key(0), seeds)


def say(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------------------
# MinAtar: tdjax against the single-purpose baseline, probes on/off.


def minatar_config(a) -> ValueConfig:
    """tdjax's settings for table A/B; `baseline_config` gives the baseline the same ones."""
    return ValueConfig(
        env="Breakout-MinAtar", algo="dqn", network="minatar_cnn", num_envs=a.num_envs, total_steps=a.steps,
        buffer_size=a.buffer_size, batch_size=a.batch_size, learning_starts=a.learning_starts,
        train_frequency=1, target_update_interval=a.target_update_interval, gamma=0.99, optimizer="adam",
        lr=2.5e-4, adam_eps=1e-8, max_grad_norm=None, eps_start=1.0, eps_end=0.05, eps_decay_steps=10_000,
        probe_interval=0, probe_k=a.probe_k,
    )


def baseline_config(cfg: ValueConfig, network: str = "tdjax") -> dict:
    return {
        "ENV_NAME": cfg.env, "NUM_ENVS": cfg.num_envs, "TOTAL_TIMESTEPS": cfg.total_steps,
        "BUFFER_SIZE": cfg.buffer_size, "BATCH_SIZE": cfg.batch_size, "LEARNING_STARTS": cfg.learning_starts,
        "TARGET_UPDATE_INTERVAL": cfg.target_update_interval, "LR": cfg.lr, "ADAM_EPS": cfg.adam_eps,
        "GAMMA": cfg.gamma, "EPS_START": cfg.eps_start, "EPS_END": cfg.eps_end,
        "EPS_DECAY_STEPS": cfg.eps_decay_steps, "NETWORK": network,
    }


class Variant:
    """One compiled run (compilation timed separately), called `repeats` times interleaved with the
    other variants of the same table (so that load drifting on a shared machine hits them alike);
    the fastest call counts. `finish(output)` checks the first output and returns facts about it."""

    def __init__(self, fn: Callable, args: tuple, steps: int, finish: Callable[[Any], Dict[str, Any]]):
        t0 = time.perf_counter()
        self.compiled = jax.jit(fn).lower(*args).compile()
        self.compile_s = time.perf_counter() - t0
        self.args, self.steps, self.finish = args, steps, finish
        self.best, self.facts = float("inf"), None

    def call(self) -> None:
        t0 = time.perf_counter()
        out = jax.block_until_ready(self.compiled(*self.args))
        self.best = min(self.best, time.perf_counter() - t0)
        if self.facts is None:
            self.facts = self.finish(out)

    def result(self) -> Dict[str, Any]:
        return {"sps": self.steps / self.best, "run_s": self.best, "compile_s": self.compile_s, **self.facts}


def tdjax_variant(cfg: ValueConfig, seeds: int) -> Variant:
    def finish(out):
        m = out[1]
        assert np.isfinite(np.asarray(m.loss)[np.asarray(m.learned)]).all(), "tdjax: non-finite loss"
        return {"probes": int(np.asarray(m.probes.probed)[0].sum())}

    iters = cfg.total_steps // (cfg.num_envs * cfg.train_frequency)
    return Variant(jax.vmap(make_train(cfg)), (seed_keys(seeds),), seeds * iters * cfg.num_envs * cfg.train_frequency,
                   finish)


def baseline_variant(cfg: ValueConfig, seeds: int, network: str) -> Variant:
    bcfg, keys = baseline_config(cfg, network), seed_keys(seeds)

    def finish(out):  # raises unless the baseline really trained
        return {"facts": baseline.check_trained(bcfg, keys, *out)}

    steps = seeds * (cfg.total_steps // cfg.num_envs) * cfg.num_envs
    return Variant(jax.vmap(baseline.make_train(bcfg)), (keys,), steps, finish)


def check_same_maths(cfg: ValueConfig) -> float:
    """One DQN update on the same batch: tdjax's `learner_update` and the baseline's loss + Adam step
    give the same loss and parameters (the baseline imports the same network). Returns the largest
    parameter difference."""
    import optax

    from tdjax.train.value_based import LearnerState

    agent = make_agent(cfg)
    net = baseline.make_network("tdjax", agent.env.num_actions)
    tx = optax.adam(cfg.lr, eps=cfg.adam_eps)
    b, shape = cfg.batch_size, agent.env.obs_shape

    @jax.jit
    def both(key):
        k = jax.random.split(key, 7)
        params = agent.network.init(k[5], jnp.zeros(shape))
        target = jax.tree.map(lambda p: 0.9 * p, agent.network.init(k[6], jnp.zeros(shape)))
        obs = (jax.random.uniform(k[0], (b,) + shape) < 0.1).astype(jnp.float32)
        nxt = (jax.random.uniform(k[1], (b,) + shape) < 0.1).astype(jnp.float32)
        act = jax.random.randint(k[2], (b,), 0, agent.env.num_actions)
        rew = jax.random.normal(k[3], (b,))
        disc = (jax.random.uniform(k[4], (b,)) < 0.9).astype(jnp.float32)
        tr = replay_lib.Transition(obs=obs, action=act, reward=rew, discount=disc, next_obs=nxt,
                                   done=disc == 0, valid=jnp.ones((b,), bool))
        new, loss_t = agent.learner_update(LearnerState(params, target, agent.optimizer.init(params)), tr)
        bt = baseline.Transition(obs, act, rew, disc, nxt)
        loss_b, g = jax.value_and_grad(lambda p: baseline.dqn_loss(net, cfg.gamma, p, target, bt))(params)
        upd, _ = tx.update(g, tx.init(params), params)
        diff = jax.tree.map(lambda x, y: jnp.max(jnp.abs(x - y)), new.params, optax.apply_updates(params, upd))
        return loss_t, loss_b, jnp.max(jnp.stack(jax.tree.leaves(diff)))

    loss_t, loss_b, diff = (float(x) for x in both(jax.random.key(2)))
    assert abs(loss_t - loss_b) <= 1e-5 * max(1.0, abs(loss_b)), (loss_t, loss_b)
    assert diff < 1e-6, diff
    return diff


def bench_minatar(a, tables: Sequence[str]) -> Dict[str, Any]:
    cfg = minatar_config(a)
    pcfg = cfg.replace(probe_interval=a.probe_interval)
    iters = cfg.total_steps // cfg.num_envs
    warm = -(-cfg.learning_starts // cfg.num_envs)
    say(f"\n## MinAtar Breakout: DQN, MinAtar CNN (conv 3×3/16 → dense 128 → 3), {cfg.num_envs} envs, one "
        f"update (batch {cfg.batch_size}, Adam lr {cfg.lr}, no clipping) per vectorised step; buffer "
        f"{cfg.buffer_size}, learning_starts {cfg.learning_starts}, target every {cfg.target_update_interval} "
        f"updates; {cfg.total_steps} env steps per seed = {iters} iterations, {iters - warm} updates")
    diff = check_same_maths(cfg)
    say(f"check: one update of tdjax's learner_update == the baseline's loss + Adam step on the same batch "
        f"(max parameter difference {diff:.1e})")
    res: Dict[str, Any] = {"tdjax": {}, "probes": {}, "baseline": {}, "dense": {}}
    for s in a.seeds:
        variants: Dict[Any, Variant] = {("tdjax", None): tdjax_variant(cfg, s)}
        if "minatar" in tables:
            for net in a.baseline_networks:
                variants[("baseline", net)] = baseline_variant(cfg, s, net)
        if "probes" in tables:
            variants[("probes", None)] = tdjax_variant(pcfg, s)
            if a.probe_dense_interval:
                variants[("dense", None)] = tdjax_variant(cfg.replace(probe_interval=a.probe_dense_interval), s)
        for _ in range(a.repeats):  # interleaved
            for v in variants.values():
                v.call()
        for (kind, net), v in variants.items():
            r = v.result()
            if kind == "baseline":
                res["baseline"].setdefault(net, {})[s] = r
                f = r["facts"]
                say(f"  baseline/{net:9s} seeds={s:2d}: {r['sps']:9.0f} env steps/s "
                    f"(run {r['run_s']:.1f} s, compile {r['compile_s']:.1f} s); it trained: {f['updates']} "
                    f"updates, loss {f['loss_first_50']:.4f} → {f['loss_last_50']:.4f}, max |Δθ| "
                    f"{f['max_param_change']:.3f}, {f['episodes']} episodes")
            else:
                res[kind][s] = r
                what = {"tdjax": "tdjax, probes off", "probes": f"tdjax, probes every {pcfg.probe_interval}",
                        "dense": f"tdjax, probes every {a.probe_dense_interval}"}[kind]
                say(f"  {what:28s} seeds={s:2d}: {r['sps']:9.0f} env steps/s ({r['probes']} probes per seed; "
                    f"run {r['run_s']:.1f} s, compile {r['compile_s']:.1f} s)")
        del variants

    if "minatar" in tables:
        nets = a.baseline_networks
        headers = ["seeds (vmapped)", "tdjax, env steps/s"] + [f"baseline ({n}), env steps/s" for n in nets] + \
                  [f"tdjax ÷ baseline ({n})" for n in nets]
        rows = []
        for s in a.seeds:
            t = res["tdjax"][s]["sps"]
            rows.append([s, fmt(t)] + [fmt(res["baseline"][n][s]["sps"]) for n in nets]
                        + [f"{t / res['baseline'][n][s]['sps']:.2f}" for n in nets])
        say("\n### A. Whole run, probes off: tdjax vs the PureJaxRL-style single-file DQN (same settings)\n")
        say(md_table(headers, rows))
    if "probes" in tables:
        say(f"\n### B. Probe cost at probe_interval={pcfg.probe_interval} updates, probe_k={pcfg.probe_k} "
            f"(srank, dormant fraction, update rank of the agent and of a fresh network, interference, "
            f"TD-sign variance)\n")
        dense = res["dense"]
        rows = []
        for s in a.seeds:
            off, on = res["tdjax"][s], res["probes"][s]
            row = [s, on["probes"], fmt(off["sps"]), fmt(on["sps"]), f"{on['sps'] / off['sps']:.3f}",
                   f"{100 * (1.0 - on['sps'] / off['sps']):.1f} %"]
            if s in dense:
                # per-probe seconds from a run with many probes, then the cost it implies at the default interval
                d = dense[s]
                per_probe = (d["run_s"] - off["run_s"]) / max(d["probes"], 1)
                extra = per_probe * on["probes"]
                row += [d["probes"], f"{per_probe:.3f} s", f"{100 * extra / (off['run_s'] + extra):.1f} %"]
            rows.append(row)
        headers = ["seeds", "probes per seed", "probes off, env steps/s", "probes on, env steps/s", "on ÷ off",
                   "probe cost, measured (1 − on ÷ off)"]
        if dense:
            headers += [f"probes per seed at interval {a.probe_dense_interval}", "s per probe (all seeds)",
                        f"probe cost at interval {pcfg.probe_interval}, from the s per probe"]
        say(md_table(headers, rows))
        if dense:
            say("(The last columns time a run with probes every "
                f"{a.probe_dense_interval} updates: s per probe = (its run time − the probes-off run time) ÷ its "
                "probes; the cost is that times the probes of the default run over the default run's time — "
                "less noisy than the measured difference of two runs when the cost is a few %.)")
    return res


# ----------------------------------------------------------------------------------------------------
# Pong through envpool.

CANDIDATE = "nature_cnn_im2col"
"""A torso that is NOT part of tdjax: the Nature CNN with every convolution computed as strided slices
(im2col) and one matmul, like tdjax's MinAtar `PatchConv`, with the same parameters. Registered in
`tdjax.networks.heads.TORSOS` only while `candidate_torso()` is active, to measure what that change
to tdjax's `NatureTorso` would give (XLA:CPU's backward convolutions inside `lax.cond`/`lax.scan`
bodies are not rewritten to its fast form; matmuls are unaffected)."""


class StridedPatchConv(nn.Module):
    """`nn.Conv(features, (k, k), strides=(s, s), padding="VALID")` as im2col + one matmul (same params)."""

    features: int
    k: int
    s: int

    @nn.compact
    def __call__(self, x):
        k, s, c = self.k, self.s, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, c, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        h, w = (x.shape[-3] - k) // s + 1, (x.shape[-2] - k) // s + 1
        patches = jnp.concatenate([x[..., i:i + s * (h - 1) + 1:s, j:j + s * (w - 1) + 1:s, :]
                                   for i in range(k) for j in range(k)], axis=-1)
        return patches @ kernel.reshape(k * k * c, self.features) + bias


class Im2colNatureTorso(nn.Module):
    """`tdjax.networks.heads.NatureTorso` with `StridedPatchConv`s: same parameter tree and maths."""

    @nn.compact
    def __call__(self, x):
        x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
        x = nn.relu(StridedPatchConv(32, 8, 4, name="Conv_0")(x))
        x = nn.relu(StridedPatchConv(64, 4, 2, name="Conv_1")(x))
        x = nn.relu(StridedPatchConv(64, 3, 1, name="Conv_2")(x))
        return nn.relu(nn.Dense(512, name="Dense_0")(x.reshape(x.shape[:-3] + (-1,))))


@contextlib.contextmanager
def candidate_torso():
    heads.TORSOS[CANDIDATE] = Im2colNatureTorso
    try:
        yield
    finally:
        heads.TORSOS.pop(CANDIDATE, None)


def check_candidate_torso() -> float:
    """The im2col torso computes what NatureTorso computes, with the same parameters."""
    x = jax.random.uniform(jax.random.key(0), (2, 84, 84, 4))
    p = heads.NatureTorso().init(jax.random.key(1), x)
    ref, got = heads.NatureTorso().apply(p, x), Im2colNatureTorso().apply(p, x)
    err = float(jnp.max(jnp.abs(ref - got)) / jnp.max(jnp.abs(ref)))
    assert err < 1e-4, err
    return err


def pong_config(a, backend: str, network: str = "nature_cnn") -> ValueConfig:
    return ValueConfig(
        env="Pong-v5", env_backend=backend, env_options=(("num_threads", a.pong_threads),), algo="dqn",
        network=network, num_envs=a.pong_envs, total_steps=a.pong_steps // a.pong_envs * a.pong_envs,
        buffer_size=a.pong_buffer,
        batch_size=32, learning_starts=a.pong_learning_starts, train_frequency=1, target_update_interval=1000,
        lr=1e-4, max_grad_norm=None, eps_decay_steps=100_000, probe_interval=0,
    )


def envpool_random(a, steps: int) -> float:
    """envpool's own host API, random actions: env steps/s."""
    import envpool

    env = envpool.make("Pong-v5", env_type="gymnasium", num_envs=a.pong_envs, num_threads=a.pong_threads, seed=0,
                       episodic_life=True, reward_clip=True)
    n_act = env.action_space.n
    rng = np.random.default_rng(0)
    env.reset()
    for _ in range(10):
        env.step(rng.integers(0, n_act, a.pong_envs))
    iters = max(steps // a.pong_envs, 1)
    acts = rng.integers(0, n_act, (iters, a.pong_envs))
    t0 = time.perf_counter()
    for i in range(iters):
        env.step(acts[i])
    return iters * a.pong_envs / (time.perf_counter() - t0)


def vecenv_random(a, backend: str, steps: int) -> float:
    """tdjax's VecEnv inside one jitted `lax.scan`, random actions: env steps/s."""
    from tdjax.envs import make_vec

    venv = make_vec("Pong-v5", a.pong_envs, backend=backend, options={"num_threads": a.pong_threads})
    iters = max(steps // a.pong_envs, 1)

    def run(key):
        state, obs = venv.reset(key)

        def body(carry, k):
            state, acc = carry
            action = jax.random.randint(k, (a.pong_envs,), 0, venv.num_actions)
            state, st = venv.step(state, k, action)
            return (state, acc + st.obs[:, 0, 0, 0].sum()), None

        return jax.lax.scan(body, (state, jnp.zeros(())), jax.random.split(key, iters))[0][1]

    t, _, _ = timed(run, jax.random.key(0))
    return iters * a.pong_envs / t


def pong_scan(a, backend: str, network: str = "nature_cnn") -> Dict[str, float]:
    cfg = pong_config(a, backend, network)
    t, c, (_, m) = timed(make_train(cfg), jax.random.key(0))
    steps = int(np.asarray(m.env_steps)[-1])
    return {"sps": steps / t, "run_s": t, "compile_s": c, "steps": steps,
            "updates": int(np.asarray(m.learned).sum())}


def pong_host_driven(a, chunk: int, backend: str = "xla") -> Dict[str, float]:
    """chunk = 1: tdjax's `run_host_driven` (one jitted `agent.run(state, i, 1)` per iteration, state
    donated; iteration 0, a warm-up iteration, runs first untimed, to compile); chunk > 1: a jitted
    `agent.run(state, i, chunk)` (one `lax.scan` of `chunk` iterations, state donated) per call."""
    from tdjax.train import run_host_driven

    cfg = pong_config(a, backend)
    agent = make_agent(cfg)
    state = jax.block_until_ready(jax.jit(agent.init)(jax.random.key(0)))
    state = jax.tree.map(jnp.copy, state)  # params and target_params must not share buffers (donation)
    t0 = time.perf_counter()
    if chunk == 1:
        assert agent.warmup_iterations >= 1
        state, _ = jax.block_until_ready(run_host_driven(agent, state, 0, 1))
        first, n_iter = 1, agent.num_iterations

        def step(state, i):
            return run_host_driven(agent, state, i, 1)
    else:
        first, n_iter = 0, agent.num_iterations - agent.num_iterations % chunk
        step = jax.jit(agent.run, static_argnums=2, donate_argnums=0).lower(state, 0, chunk).compile()
    c = time.perf_counter() - t0
    learned = []
    t0 = time.perf_counter()
    for i in range(first, n_iter, chunk):
        state, m = step(state, i)
        learned.append(m.learned)
    jax.block_until_ready(state)
    t = time.perf_counter() - t0
    steps = (n_iter - first) * cfg.num_envs
    return {"sps": steps / t, "run_s": t, "compile_s": c, "steps": steps,
            "updates": int(np.asarray(jnp.concatenate(learned)).sum())}


def pong_host_split(a, backend: str = "xla") -> Dict[str, float]:
    """NOT a tdjax API (a measurement of the loop structure tdjax could offer): Python calls, per
    iteration, a jitted acting step (`agent.run(state, i, 1)` of an agent whose warm-up never ends, so
    its update branch is never taken) and then, outside any control flow, a jitted
    `learner_update(learner, sample(replay))`; the target network is copied every
    `target_update_interval` updates. Same work as `make_train(cfg)`."""
    cfg = pong_config(a, backend)
    act = make_agent(cfg.replace(learning_starts=cfg.total_steps - 1))  # acting + replay only
    assert act.warmup_iterations >= act.num_iterations
    warm = -(-cfg.learning_starts // cfg.num_envs)
    state = jax.block_until_ready(jax.jit(act.init)(jax.random.key(0)))
    state = jax.tree.map(jnp.copy, state)
    key = jax.random.key(1)

    def update(learner, replay, i):
        batch = replay_lib.sample(replay, jax.random.fold_in(key, i), cfg.batch_size)
        return act.learner_update(learner, batch)

    t0 = time.perf_counter()
    step = jax.jit(act.run, static_argnums=2, donate_argnums=0).lower(state, 0, 1).compile()
    upd = jax.jit(update, donate_argnums=0).lower(state.learner, state.actor.replay, 0).compile()
    c = time.perf_counter() - t0
    updates = 0
    t0 = time.perf_counter()
    for i in range(act.num_iterations):
        state, _ = step(state, i)
        if i >= warm:
            learner, _ = upd(state.learner, state.actor.replay, i)
            updates += 1
            if updates % cfg.target_update_interval == 0:
                learner = learner._replace(target_params=jax.tree.map(jnp.copy, learner.params))
            state = state._replace(learner=learner)
    jax.block_until_ready(state)
    t = time.perf_counter() - t0
    steps = act.num_iterations * cfg.num_envs
    return {"sps": steps / t, "run_s": t, "compile_s": c, "steps": steps, "updates": updates}


def bench_pong(a) -> Dict[str, Any]:
    cfg = pong_config(a, "xla")
    warm = -(-cfg.learning_starts // cfg.num_envs)
    iters = cfg.total_steps // cfg.num_envs
    say(f"\n## Atari Pong-v5 through envpool: DQN, Nature CNN, {cfg.num_envs} envs ({a.pong_threads} envpool "
        f"threads), one update (batch {cfg.batch_size}, Adam) per vectorised step; buffer {cfg.buffer_size}, "
        f"learning_starts {cfg.learning_starts}; {cfg.total_steps} env steps = {iters} iterations, "
        f"{iters - warm} updates")
    rows: List[Dict[str, Any]] = []

    def add(name, structure, backend, r):
        rows.append(dict(name=name, structure=structure, backend=backend, **r))
        say(f"  {name:28s} {structure:34s} {backend:5s}: {r['sps']:8.1f} env steps/s"
            + (f" (run {r['run_s']:.1f} s, compile {r['compile_s']:.1f} s, {r['updates']} updates)"
               if "run_s" in r else ""))

    env_steps = a.pong_env_steps
    add("envpool alone, random actions", "envpool host API (Python loop)", "host",
        {"sps": envpool_random(a, env_steps)})
    for be in a.pong_backends:
        add("tdjax VecEnv, random actions", "one lax.scan", be, {"sps": vecenv_random(a, be, env_steps)})
    for be in a.pong_backends:
        add("tdjax DQN", "one lax.scan (make_train)", be, pong_scan(a, be))
    for k in a.pong_chunks:
        label = "host-driven: run_host_driven (1 iteration per call)" if k == 1 else \
            f"host-driven: jit(agent.run)(s, i, {k})"
        add("tdjax DQN", label, "xla", pong_host_driven(a, k))
    if a.pong_split:
        add("DQN from tdjax's pieces (not an API)", "host-driven, update at top level", "xla", pong_host_split(a))
    if a.candidate:
        check_candidate_torso()
        with candidate_torso():
            add("tdjax DQN, im2col Nature CNN (candidate)", "one lax.scan (make_train)", "xla",
                pong_scan(a, "xla", CANDIDATE))

    base = next(r["sps"] for r in rows if r["name"] == "tdjax DQN" and r["structure"].startswith("one"))
    say("\n### C. Pong-v5: env steps/s of the whole run (updates included) by loop structure and env backend\n")
    say(md_table(["what", "loop structure", "env backend", "env steps/s", "updates", "÷ DQN one scan (xla)"],
                 [[r["name"], r["structure"], r["backend"], fmt(r["sps"]), r.get("updates", "–"),
                   f"{r['sps'] / base:.2f}"] for r in rows]))
    return {"rows": rows}


def update_costs(a, network: str) -> Dict[str, float]:
    """Seconds per Nature-CNN DQN update (tdjax's `learner_update`): jitted call from Python, under a
    taken `lax.cond`, and `update_scan_length` of them inside one `lax.scan`."""
    cfg = pong_config(a, "host", network)
    agent = make_agent(cfg)
    learner = jax.jit(agent.init)(jax.random.key(0)).learner
    b, shape = cfg.batch_size, agent.env.obs_shape
    k = jax.random.split(jax.random.key(1), 4)
    batch = replay_lib.Transition(
        obs=jax.random.randint(k[0], (b,) + shape, 0, 256).astype(jnp.float32),
        action=jax.random.randint(k[1], (b,), 0, agent.env.num_actions), reward=jax.random.normal(k[2], (b,)),
        discount=jnp.ones((b,)), next_obs=jax.random.randint(k[3], (b,) + shape, 0, 256).astype(jnp.float32),
        done=jnp.zeros((b,), bool), valid=jnp.ones((b,), bool))
    n_scan = a.update_scan_length

    def direct(l, bt):
        return agent.learner_update(l, bt)

    def under_cond(l, bt, p):
        return jax.lax.cond(p, lambda l: agent.learner_update(l, bt), lambda l: (l, jnp.zeros(())), l)

    def under_select(l, bt, p):  # computed unconditionally, kept or dropped with jnp.where
        new, loss = agent.learner_update(l, bt)
        return jax.tree.map(lambda x, y: jnp.where(p, x, y), new, l), jnp.where(p, loss, 0.0)

    def in_scan(l, bt):
        return jax.lax.scan(lambda l, _: agent.learner_update(l, bt), l, None, n_scan)

    def per_call(fn, *args, calls):
        compiled = jax.jit(fn).lower(*args).compile()
        jax.block_until_ready(compiled(*args))
        ts = []
        for _ in range(calls):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    return {"direct": per_call(direct, learner, batch, calls=a.update_calls),
            "cond": per_call(under_cond, learner, batch, jnp.asarray(True), calls=a.update_calls),
            "select": per_call(under_select, learner, batch, jnp.asarray(True), calls=a.update_calls),
            "scan": per_call(in_scan, learner, batch, calls=max(a.update_calls // n_scan, 2)) / n_scan}


def bench_update(a) -> Dict[str, Any]:
    res = {"nature_cnn": update_costs(a, "nature_cnn")}
    if a.candidate:
        check_candidate_torso()
        with candidate_torso():
            res[CANDIDATE] = update_costs(a, CANDIDATE)
    say("\n### D. One Nature-CNN DQN update (tdjax's learner_update, batch 32, Adam, 84×84×4 frames): median ms\n")
    rows = []
    base = res["nature_cnn"]["direct"]
    for net, r in res.items():
        label = "tdjax NatureTorso (nn.Conv)" if net == "nature_cnn" else "im2col torso (candidate, not in tdjax)"
        rows.append([label] + [f"{1e3 * r[w]:.1f}" for w in ("direct", "cond", "select", "scan")]
                    + [f"{r[w] / base:.2f}" for w in ("direct", "cond", "select", "scan")])
    say(md_table(["network", "jitted call from Python", "under lax.cond (taken)", "always computed, jnp.where",
                  f"inside lax.scan of {a.update_scan_length}, per update",
                  "call ÷ base", "cond ÷ base", "where ÷ base", "scan ÷ base"], rows))
    say("(base: the jitted call of tdjax's NatureTorso update)")
    return res


# ----------------------------------------------------------------------------------------------------


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="every table at small sizes, 1 seed, xla backend only (~3-5 min, mostly compilation); "
                        "overrides the sizes below")
    p.add_argument("--tables", nargs="+", default=list(TABLES), choices=TABLES)
    p.add_argument("--repeats", type=int, default=1,
                   help="tables A, B: timed calls per variant, interleaved across variants (the fastest is kept)")
    g = p.add_argument_group("MinAtar (tables A, B)")
    g.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 32])
    g.add_argument("--steps", type=int, default=40_000, help="env steps per seed")
    g.add_argument("--num-envs", type=int, default=8)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--buffer-size", type=int, default=10_000)
    g.add_argument("--learning-starts", type=int, default=1_000)
    g.add_argument("--target-update-interval", type=int, default=250)
    g.add_argument("--probe-interval", type=int, default=1_000, help="updates between probes (table B)")
    g.add_argument("--probe-k", type=int, default=32)
    g.add_argument("--probe-dense-interval", type=int, default=250,
                   help="also time probes every N updates to get seconds per probe (0: skip)")
    g.add_argument("--baseline-networks", nargs="+", default=["tdjax"], choices=["tdjax", "flax_conv"],
                   help="baseline network(s): tdjax's (identical maths) and/or rebuilt with nn.Conv")
    g = p.add_argument_group("Pong (tables C, D)")
    g.add_argument("--pong-steps", type=int, default=2_400, help="env steps of each DQN run")
    g.add_argument("--pong-learning-starts", type=int, default=800)
    g.add_argument("--pong-buffer", type=int, default=4_000)
    g.add_argument("--pong-envs", type=int, default=8)
    g.add_argument("--pong-threads", type=int, default=2, help="envpool worker threads")
    g.add_argument("--pong-backends", nargs="+", default=["xla", "host"], choices=["xla", "host"])
    g.add_argument("--pong-chunks", type=int, nargs="+", default=[1, 10], help="K of the host-driven loops")
    g.add_argument("--pong-env-steps", type=int, default=8_000, help="env steps of the environment-only rows")
    g.add_argument("--no-split", dest="pong_split", action="store_false",
                   help="skip the host-driven loop with the update at top level")
    g.add_argument("--no-candidate", dest="candidate", action="store_false",
                   help="skip the rows of the im2col Nature torso (a candidate change, not in tdjax)")
    g.add_argument("--update-calls", type=int, default=20)
    g.add_argument("--update-scan-length", type=int, default=10)
    a = p.parse_args(argv)
    if a.quick:  # every table, smallest useful sizes: the time goes mostly into compiling ~15 loops
        a.seeds = [1]
        a.steps, a.probe_interval, a.probe_dense_interval = 8_000, 200, 0
        a.pong_steps, a.pong_learning_starts, a.pong_buffer, a.pong_env_steps = 800, 400, 800, 2_000
        a.pong_backends, a.pong_chunks, a.update_calls, a.update_scan_length = ["xla"], [1], 3, 3
    return a


def main(argv=None) -> Dict[str, Any]:
    a = parse(argv)
    say(f"# {os.path.basename(__file__)}: jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({jax.device_count()} device(s)), {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"load average {os.getloadavg()[0]:.1f} at start; MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX')}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS')}; repeats={a.repeats}; compile time excluded")
    t0 = time.perf_counter()
    out: Dict[str, Any] = {}
    if "minatar" in a.tables or "probes" in a.tables:
        out["minatar"] = bench_minatar(a, a.tables)
    if "pong" in a.tables:
        out["pong"] = bench_pong(a)
    if "update" in a.tables:
        out["update"] = bench_update(a)
    say(f"\nload average {os.getloadavg()[0]:.1f} at the end; total wall time {time.perf_counter() - t0:.0f} s")
    return out


if __name__ == "__main__":
    main()
