"""Claim (issue 12, "Speed"): tdjax computes the ρ′ terms and the loss change by temporal offset for
N = 32 update samples × 20 neighbours on the Nature-DQN CNN at least 10× faster than the per-pair PyTorch
construction of Bengio et al.'s released code, and no slower than torch.func, on this CPU.

Two computations, each on the same weights (flax NatureCNN copied into its torch twin) and the same data
(32 update samples s_t, each with its 20 temporal neighbours s_{t+x}, x = ±1..±10, plus s_t itself at x = 0):

  ρ′ terms   r1, r2, r3 of Bengio et al. 2020 eq. 17 (TD(0), moving target y = r + γ·d·max_a' Q_θ(s′, a'))
             between each update sample B = s_t and each of its 21 window states A = s_{t+x}: 32 × 21 pairs.
    tdjax          jit of tdjax.interference_derivative_terms(Q(s,a), y, θ, window, s_t) mapped over the s_t
                   (jax.lax.map, 4 update samples at a time to bound memory).
    torch per-pair Bengio's `td_interf_grad_terms` (atari_experiments/atari_pol_eval.py): per-example
                   gradients for δ and the ρ̄ terms, then a Python double loop over pairs, each with two
                   `autograd.grad(..., create_graph=True)` and two double-backward passes for
                   ∇f_Bᵀ(H̄_A∇f_B + H̄_B∇f_A). (Their per-example gradients come from BackPACK, not installed
                   here; a per-example autograd loop stands in.) Timed on --pair-subset update samples and
                   scaled linearly to 32 (the loop's cost is the same per pair); the scaling is printed.
    torch.func     vmap(grad) for the per-example gradients, jvp-of-grad (forward-over-reverse) for the
                   Hessian-vector products, vmapped over the 21 window states of each update sample.
  gain       tdjax.loss_change_by_offset(update="per_sample"): per update sample one real Adam step (the
             optimizer state is a real one after a step on another batch), then J_θ − J_θ′ at the 21 states of
             its window, loss ½(Q_θ(s,a) − (r + γ·d·max Q_target(s′)))² with a frozen target network.
    tdjax          jit of the above (vmapped over the 32 update samples).
    torch loop     for each update sample: copy the model and the torch.optim.Adam state, backward, step,
                   evaluate the window before and after (what a torch user writes).
    torch.func     vmap(grad) + a functional Adam step + vmap(functional_call) over the per-sample params.

The script checks that the three implementations agree (max relative difference, printed) before timing.
Times: median of --reps calls after one warm-up (the per-pair loop: one call). Other processes may share
the CPU: the load average is printed with the results.

Usage: python benchmarks/bench_interference_terms.py [--reps 3] [--pair-subset 2] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.func as tf

import tdjax
from tdjax.networks import NatureCNN

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _torch_nets import TorchNatureCNN, from_flax  # noqa: E402

N, X, A, GAMMA, LR = 32, 10, 6, 0.99, 1e-4
W = 2 * X + 1


def _data(seed=0):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    # A window per update sample: obs [N, W, 84, 84, 4] etc.; the update sample is the window's centre.
    win = dict(
        obs=rng.uniform(size=(N, W, 84, 84, 4)).astype(f32),
        action=rng.integers(0, A, size=(N, W)).astype(np.int32),
        reward=rng.normal(size=(N, W)).astype(f32),
        discount=(rng.uniform(size=(N, W)) > 0.05).astype(f32),
        next_obs=rng.uniform(size=(N, W, 84, 84, 4)).astype(f32),
    )
    other = dict(obs=rng.uniform(size=(8, 84, 84, 4)).astype(f32), action=rng.integers(0, A, size=8).astype(np.int32),
                 reward=rng.normal(size=8).astype(f32), discount=np.ones(8, f32),
                 next_obs=rng.uniform(size=(8, 84, 84, 4)).astype(f32))
    return win, other


def _time(fn, reps, warm=True):
    if warm:
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))


# ----------------------------------------------------------------------------------------------------
# JAX / tdjax.


def jax_side(params, target_params, opt_state, win):
    model = NatureCNN(A)

    def value_fn(p, ex):
        return model.apply(p, ex["obs"])[ex["action"]]

    def target_fn(p, ex):  # moving TD(0) target: θ appears in the bootstrap
        return ex["reward"] + GAMMA * ex["discount"] * jnp.max(model.apply(p, ex["next_obs"]))

    def td_loss(p, ex):  # frozen target network for the gain
        y = ex["reward"] + GAMMA * ex["discount"] * jnp.max(model.apply(target_params, ex["next_obs"]))
        return 0.5 * (model.apply(p, ex["obs"])[ex["action"]] - y) ** 2

    def terms_one(window, sample):
        t = tdjax.interference_derivative_terms(value_fn, target_fn, params, window,
                                                jax.tree.map(lambda a: a[None], sample))
        return jnp.stack([t.r1[:, 0], t.r2[:, 0], t.r3[:, 0]])  # [3, W]

    centre = jax.tree.map(lambda a: a[:, X], win)
    # Four update samples (84 pairs) at a time: their per-example gradients take 2 × 84 × P floats.
    terms = jax.jit(lambda w, c: jax.lax.map(lambda wc: terms_one(*wc), (w, c), batch_size=4))
    mask = jnp.ones((N, W), bool)
    opt = optax.adam(LR)
    gain = jax.jit(lambda p, s, w, c: tdjax.loss_change_by_offset(td_loss, p, opt, s, c, w, mask).per_sample)
    return (lambda: jax.block_until_ready(terms(win, centre)),
            lambda: jax.block_until_ready(gain(params, opt_state, win, centre)))


# ----------------------------------------------------------------------------------------------------
# PyTorch.


def _flat(grads, theta=None):
    """Concatenated gradients; None (a parameter the output does not reach to 2nd order) as zeros, like
    the released code's `S`."""
    theta = theta if theta is not None else grads
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, theta)])


def torch_per_pair_terms(model, win, n_samples):
    """Bengio's td_interf_grad_terms, B = the update sample, A = its window; per-pair double backprop."""
    theta = list(model.parameters())
    out = np.zeros((n_samples, 3, W))
    for i in range(n_samples):
        s, a, r, d, sp = (win[k][i] for k in ("obs", "action", "reward", "discount", "next_obs"))
        sB, aB, rB, dB, spB = s[X:X + 1], a[X:X + 1], r[X:X + 1], d[X:X + 1], sp[X:X + 1]

        def f(ss, aa):
            return model(ss)[torch.arange(len(aa)), aa]

        def pe_grads(fn, k):  # per-example gradients (BackPACK's BatchGrad in their code)
            return torch.stack([_flat(torch.autograd.grad(fn(j), theta)) for j in range(k)])

        with torch.no_grad():
            delta_A = f(s, a) - r - GAMMA * d * model(sp).max(1).values
            delta_B = f(sB, aB) - rB - GAMMA * dB * model(spB).max(1).values
        gA = pe_grads(lambda j: f(s[j:j + 1], a[j:j + 1])[0], W)
        gB = pe_grads(lambda j: f(sB, aB)[0], 1)
        gAp = pe_grads(lambda j: model(sp[j:j + 1]).max(1).values[0] * d[j], W)
        gBp = pe_grads(lambda j: model(spB).max(1).values[0] * dB[0], 1)
        g_AB = gA @ gB.T
        g_ApB = gAp @ gB.T
        g_BB = (gB * gB).sum(1)
        g_BpB = (gBp * gB).sum(1)
        term0 = delta_B[None, :] ** 2 * g_AB * (g_AB - GAMMA * g_ApB)
        term1 = delta_A[:, None] * delta_B[None, :] * g_AB * (g_BB[None, :] - GAMMA * g_BpB[None, :])
        inner = torch.zeros(W, 1)
        for j in range(W):  # the per-pair loop of the released code
            dfadt = _flat(torch.autograd.grad(model(s[j][None])[0, a[j]], theta, create_graph=True))
            dfbdt = _flat(torch.autograd.grad(model(sB[0][None])[0, aB[0]], theta, create_graph=True))
            HfA = _flat(torch.autograd.grad(dfadt @ dfbdt.detach(), theta, create_graph=True, allow_unused=True), theta)
            HfB = _flat(torch.autograd.grad(dfadt.detach() @ dfbdt, theta, create_graph=True, allow_unused=True), theta)
            inner[j, 0] = ((HfA + HfB) @ dfbdt).detach()
        term2 = delta_A[:, None] * delta_B[None, :] ** 2 * inner
        out[i] = torch.stack([term0[:, 0], term1[:, 0], term2[:, 0]]).detach().numpy()
    return out


def torch_func_terms(model, win):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def q(p, s):
        return tf.functional_call(model, p, (s[None],))[0]

    def f(p, s, a):  # gather, not q[a]: an int index into a vmapped tensor needs .item()
        return torch.gather(q(p, s), 0, a[None])[0]

    def fp(p, sp, d):
        return d * q(p, sp).max()

    dot = lambda u, v: sum((u[k] * v[k]).sum() for k in u)  # noqa: E731
    out = np.zeros((N, 3, W))
    for i in range(N):
        s, a, r, d, sp = (win[k][i] for k in ("obs", "action", "reward", "discount", "next_obs"))
        with torch.no_grad():
            qs = tf.vmap(q, in_dims=(None, 0))(params, s)
            delta = qs[torch.arange(W), a] - r - GAMMA * d * tf.vmap(q, in_dims=(None, 0))(params, sp).max(1).values
        gA = tf.vmap(tf.grad(f), in_dims=(None, 0, 0))(params, s, a)
        gAp = tf.vmap(tf.grad(fp), in_dims=(None, 0, 0))(params, sp, d)
        gB = {k: v[X] for k, v in gA.items()}
        gBp = {k: v[X] for k, v in gAp.items()}
        g_AB = sum((gA[k].reshape(W, -1) @ gB[k].reshape(-1)) for k in gA)
        g_ApB = sum((gAp[k].reshape(W, -1) @ gB[k].reshape(-1)) for k in gA)
        g_BB, g_BpB = dot(gB, gB), dot(gBp, gB)

        def hvp_a(sa, aa):  # H̄_A ∇f_B, forward-over-reverse
            return tf.jvp(lambda p: tf.grad(f)(p, sa, aa), (params,), (gB,))[1]

        hA = tf.vmap(hvp_a)(s, a)
        quad = sum((hA[k].reshape(W, -1) @ gB[k].reshape(-1)) for k in hA)  # ∇f_Bᵀ H̄_A ∇f_B
        hB = hvp_a(s[X], a[X])  # H̄_B ∇f_B
        cross = sum((gA[k].reshape(W, -1) @ hB[k].reshape(-1)) for k in gA)  # ∇f_Aᵀ H̄_B ∇f_B
        dA, dB = delta, delta[X]
        r1 = dB**2 * g_AB * (g_AB - GAMMA * g_ApB)
        r2 = dA * dB * g_AB * (g_BB - GAMMA * g_BpB)
        r3 = dA * dB**2 * (quad + cross)
        out[i] = torch.stack([r1, r2, r3]).detach().numpy()
    return out


def _td_loss_torch(model, target, s, a, r, d, sp):
    with torch.no_grad():
        y = r + GAMMA * d * target(sp).max(1).values
    return 0.5 * (model(s)[torch.arange(len(a)), a] - y) ** 2


def torch_loop_gain(model, target, adam, win):
    out = np.zeros((N, W))
    for i in range(N):
        s, a, r, d, sp = (win[k][i] for k in ("obs", "action", "reward", "discount", "next_obs"))
        m = copy.deepcopy(model)
        opt = torch.optim.Adam(m.parameters(), lr=LR)
        opt.load_state_dict(copy.deepcopy(adam.state_dict()))  # load_state_dict shares the tensors
        with torch.no_grad():
            before = _td_loss_torch(m, target, s, a, r, d, sp)
        opt.zero_grad()
        _td_loss_torch(m, target, s[X:X + 1], a[X:X + 1], r[X:X + 1], d[X:X + 1], sp[X:X + 1]).sum().backward()
        opt.step()
        with torch.no_grad():
            out[i] = (before - _td_loss_torch(m, target, s, a, r, d, sp)).numpy()
    return out


def torch_func_gain(model, target, adam, win):
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = [k for k, _ in model.named_parameters()]
    st = [adam.state[p] for p in model.parameters()]
    mu = {k: s["exp_avg"] for k, s in zip(names, st)}
    nu = {k: s["exp_avg_sq"] for k, s in zip(names, st)}
    step = float(st[0]["step"]) + 1
    b1, b2, eps = 0.9, 0.999, 1e-8

    def loss(p, s, a, r, d, sp):
        with torch.no_grad():
            y = r + GAMMA * d * target(sp[None]).max(1).values[0]
        return 0.5 * (torch.gather(tf.functional_call(model, p, (s[None],))[0], 0, a[None])[0] - y) ** 2

    def new_params(s, a, r, d, sp):
        g = tf.grad(loss)(params, s, a, r, d, sp)
        out = {}
        for k in params:
            m = b1 * mu[k] + (1 - b1) * g[k]
            v = b2 * nu[k] + (1 - b2) * g[k] ** 2
            out[k] = params[k] - LR * (m / (1 - b1**step)) / ((v / (1 - b2**step)).sqrt() + eps)
        return out

    win_t = [win[k] for k in ("obs", "action", "reward", "discount", "next_obs")]
    centre = [w[:, X] for w in win_t]
    p_new = tf.vmap(new_params)(*centre)  # per-sample parameters [N, ...]
    window_loss = tf.vmap(loss, in_dims=(None, 0, 0, 0, 0, 0))  # over the W window states
    before = tf.vmap(window_loss, in_dims=(None, 0, 0, 0, 0, 0))(params, *win_t)
    after = tf.vmap(window_loss, in_dims=(0, 0, 0, 0, 0, 0))(p_new, *win_t)
    return (before - after).detach().numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pair-subset", type=int, default=2, help="update samples timed in the per-pair torch loop")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    win_np, other_np = _data()
    model = NatureCNN(A)
    key = jax.random.PRNGKey(0)
    params = model.init(key, jnp.zeros((84, 84, 4)))
    target_params = model.init(jax.random.PRNGKey(1), jnp.zeros((84, 84, 4)))
    # A real Adam state: one step on another batch.
    opt = optax.adam(LR)
    other = jax.tree.map(jnp.asarray, other_np)

    def batch_loss(p, b):
        q = jax.vmap(lambda s: model.apply(p, s))(b["obs"])[jnp.arange(8), b["action"]]
        y = b["reward"] + GAMMA * b["discount"] * jnp.max(jax.vmap(lambda s: model.apply(target_params, s))(
            b["next_obs"]), axis=-1)
        return jnp.mean(0.5 * (q - y) ** 2)

    _, opt_state = opt.update(jax.grad(batch_loss)(params, other), opt.init(params), params)
    win = jax.tree.map(jnp.asarray, win_np)

    # Torch twins: same weights, same Adam state (moments copied through the same layout map).
    tmodel = from_flax(TorchNatureCNN(4, A), params)
    ttarget = from_flax(TorchNatureCNN(4, A), target_params)
    adam = torch.optim.Adam(tmodel.parameters(), lr=LR)
    mu_model = from_flax(TorchNatureCNN(4, A), opt_state[0].mu)
    nu_model = from_flax(TorchNatureCNN(4, A), opt_state[0].nu)
    for p, m, v in zip(tmodel.parameters(), mu_model.parameters(), nu_model.parameters()):
        adam.state[p] = {"step": torch.tensor(float(opt_state[0].count)), "exp_avg": m.detach().clone(),
                         "exp_avg_sq": v.detach().clone()}
    twin = {k: torch.from_numpy(np.asarray(v)) for k, v in win_np.items()}
    twin["action"] = twin["action"].long()

    jax_terms, jax_gain = jax_side(params, target_params, opt_state, win)

    # Agreement.
    terms_j = np.asarray(jax_terms())
    terms_f = torch_func_terms(tmodel, twin)
    k = args.pair_subset
    t0 = time.perf_counter()
    terms_p = torch_per_pair_terms(tmodel, twin, k)
    t_pair = (time.perf_counter() - t0) * N / k
    gain_j = np.asarray(jax_gain())
    gain_l = torch_loop_gain(tmodel, ttarget, adam, twin)
    gain_f = torch_func_gain(tmodel, ttarget, adam, twin)
    print("agreement (max |difference| / max |reference|):")
    print(f"  ρ′ terms  tdjax vs torch.func {_rel(terms_j, terms_f):.2e}   tdjax vs per-pair (first {k} samples) "
          f"{_rel(terms_j[:k], terms_p):.2e}   (terms r1, r2, r3 max |·|: "
          f"{', '.join(f'{np.abs(terms_j[:, i]).max():.3g}' for i in range(3))})")
    print(f"  gain      tdjax vs torch loop {_rel(gain_j, gain_l):.2e}   tdjax vs torch.func {_rel(gain_j, gain_f):.2e}"
          f"   (max |gain| {np.abs(gain_j).max():.3g})")

    rows = [
        ("ρ′ terms", "tdjax interference_derivative_terms", _time(jax_terms, args.reps)),
        ("ρ′ terms", f"torch per-pair double backprop (×{N // k} from {k} samples)", t_pair),
        ("ρ′ terms", "torch.func", _time(lambda: torch_func_terms(tmodel, twin), args.reps)),
        ("gain", "tdjax loss_change_by_offset", _time(jax_gain, args.reps)),
        ("gain", "torch loop (deepcopy + Adam step per sample)",
         _time(lambda: torch_loop_gain(tmodel, ttarget, adam, twin), args.reps)),
        ("gain", "torch.func", _time(lambda: torch_func_gain(tmodel, ttarget, adam, twin), args.reps)),
    ]
    print(f"\nN = {N} update samples × {W} window states (x = −{X}..{X}), Nature CNN, {A} actions; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; torch threads {torch.get_num_threads()}; "
          f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX')} "
          f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_')} "
          f"MALLOC_TRIM_THRESHOLD_={os.environ.get('MALLOC_TRIM_THRESHOLD_')}")
    print("| computation | implementation | seconds | tdjax speed-up |")
    print("|---|---|---:|---:|")
    for what, name, t in rows:
        ref = rows[0][2] if what == "ρ′ terms" else rows[3][2]
        print(f"| {what} | {name} | {t:.3f} | {t / ref:.1f}× |")


if __name__ == "__main__":
    main()
