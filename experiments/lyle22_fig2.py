"""Lyle et al. 2022, Fig. 2 (§4.3): pre-training on high-frequency targets harms interpolation.

A network first fit to a high-frequency target on the training states, then fine-tuned on a value
function, fits the training states but interpolates worse between them than the same network trained
on the value function from its random initialisation.

Setting (the paper gives no details; these are ours):
  * Value target: V* of MountainCar from `value_iteration` on a fine (2m − 1) × (2m − 1) grid of
    `tdjax.mountain_car_mdp` (default m = 20, γ = 0.99). The training states are the m × m grid points
    with even indices on both axes; the interpolating states are the other (2m − 1)² − m² fine-grid
    points, which lie between training states. Inputs are (position, velocity) rescaled to [−1, 1]²;
    targets are V* standardised by the mean and standard deviation over the training states.
  * Pre-training targets (one network per target and seed), chosen to span frequencies: the product
    sinusoids sin(kπx₁)·sin(kπx₂) for k in `pretrain_frequencies` = (1, 8) (k = 1 is a smooth control;
    k = 8 has a period of 2.4 training-grid spacings, near the grid's Nyquist limit) and, with
    `random_labels`, i.i.d. ±1 labels of the training states (the highest frequency the grid holds).
  * Network and optimiser: `tdjax.networks.MLP((128, 128), 1)`, optax Adam (lr 1e-3), full-batch
    regression on ½(V − y)² (`tdjax.monte_carlo_loss`), 2000 pre-training and 2000 fine-tuning steps;
    fine-tuning starts a fresh Adam state. The from-scratch network starts from the same initial
    parameters as the pre-trained ones, so the only difference is the pre-training.
  * 5 seeds, `jax.vmap`-ed; the whole run (pre-training of all targets side by side, then fine-tuning of
    all networks and training from scratch side by side) is one jitted function of `lax.scan`s, logging
    every 20 steps. Losses are mean squared errors in standardised units (V* has variance 1 on the
    training states).
  * Besides the losses at the end, the claims compare the interpolation loss of each network at the
    first logged step where its training loss reaches 0.02, so that a worse fit of the training states
    cannot explain a worse interpolation.
Run: `python -m experiments.lyle22_fig2 --out outputs/lyle22_fig2` (about 1 CPU-minute; 2–3 minutes of wall time
on 2 busy cores).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import tdjax
from experiments._harness import Experiment, progress_bar
from tdjax.networks import MLP
from tdjax.report import Claims

NAME = "lyle22_fig2"
# A target counts as high-frequency (the paper's claim is about these) when its period spans at most this
# many training-grid spacings; smoother targets are reported as controls.
_HIGH_FREQUENCY_PERIOD = 4.0


@dataclasses.dataclass(frozen=True)
class Config:
    grid: int = 20  # m: training states on an m × m grid; interpolating states fill the (2m − 1)² grid.
    gamma: float = 0.99
    pretrain_frequencies: tuple[float, ...] = (1.0, 8.0)  # k of the sin(kπx₁)·sin(kπx₂) pre-training targets.
    random_labels: bool = True  # also pre-train one network on i.i.d. ±1 labels of the training states.
    hidden: tuple[int, ...] = (128, 128)
    learning_rate: float = 1e-3
    pretrain_steps: int = 2000
    finetune_steps: int = 2000
    log_every: int = 20
    matched_train_mse: float = 2e-2  # also compare interpolation when each network first fits this well.
    num_seeds: int = 5
    seed: int = 0


def config() -> Config:
    """The settings above (the paper states none)."""
    return Config()


def tiny() -> Config:
    """A few-second version for tests."""
    return dataclasses.replace(Config(), grid=10, pretrain_frequencies=(4.0,), hidden=(64, 64), pretrain_steps=300,
                               finetune_steps=300, log_every=20, num_seeds=2, learning_rate=3e-3)


def _validate(cfg: Config) -> None:
    def bad(msg):
        raise ValueError(f"{NAME}: {msg}")

    if cfg.grid < 3:
        bad(f"grid must be at least 3 (training states per axis), got {cfg.grid}.")
    if not 0 < cfg.gamma < 1:
        bad(f"gamma must lie in (0, 1), got {cfg.gamma}.")
    if not cfg.pretrain_frequencies and not cfg.random_labels:
        bad("give at least one pre-training target: pretrain_frequencies or random_labels=True.")
    if any(k <= 0 for k in cfg.pretrain_frequencies):
        bad(f"pretrain_frequencies must be positive, got {cfg.pretrain_frequencies}.")
    if not cfg.hidden or min(cfg.hidden) < 1:
        bad(f"hidden must list positive layer widths, got {cfg.hidden}.")
    for name in ("pretrain_steps", "finetune_steps"):
        steps = getattr(cfg, name)
        if steps < cfg.log_every or steps % cfg.log_every:
            bad(f"{name} ({steps}) must be a positive multiple of log_every ({cfg.log_every}).")
    if cfg.num_seeds < 1 or cfg.learning_rate <= 0:
        bad("num_seeds and learning_rate must be positive.")


class Data(NamedTuple):
    x_train: jax.Array  # shape=[n_train, 2]: normalised (position, velocity) of the training states.
    y_train: jax.Array  # shape=[n_train]: standardised V* at the training states.
    x_interp: jax.Array  # shape=[n_interp, 2]: the fine-grid states between training states.
    y_interp: jax.Array  # shape=[n_interp]: standardised V* there.
    y_pretrain: jax.Array  # shape=[K, n_train]: the K pre-training targets at the training states.


def value_data(cfg: Config) -> tuple[dict, Data]:
    """V* on the fine grid, the train/interpolation split, and the pre-training targets."""
    fine = 2 * cfg.grid - 1
    with jax.enable_x64(True):
        mdp = tdjax.mountain_car_mdp(fine, fine)
        v = np.asarray(tdjax.value_iteration(mdp.P, mdp.R, cfg.gamma).v)
    lo, hi = mdp.states.min(axis=0), mdp.states.max(axis=0)
    x = 2.0 * (mdp.states - lo) / (hi - lo) - 1.0
    i, j = np.unravel_index(np.arange(fine * fine), (fine, fine))
    train = (i % 2 == 0) & (j % 2 == 0)
    mean, std = v[train].mean(), v[train].std()
    y = (v - mean) / std
    targets = [np.sin(k * np.pi * x[train, 0]) * np.sin(k * np.pi * x[train, 1]) for k in cfg.pretrain_frequencies]
    names = [f"sin k={k:g}" for k in cfg.pretrain_frequencies]
    if cfg.random_labels:
        rng = np.random.default_rng(cfg.seed)
        targets.append(rng.choice([-1.0, 1.0], size=int(train.sum())))
        names.append("random ±1")
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    data = Data(f32(x[train]), f32(y[train]), f32(x[~train]), f32(y[~train]), f32(np.stack(targets)))
    info = dict(states=mdp.states, x=x, v=v, y=y, train_mask=train, v_mean=mean, v_std=std, target_names=names)
    return info, data


def make_train(cfg: Config, data: Data) -> Callable[[jax.Array], dict]:
    """train(key) -> curves and final predictions for K pre-trained networks and one from scratch."""
    net = MLP(tuple(cfg.hidden), 1)
    tx = optax.adam(cfg.learning_rate)

    def predict(params, x):  # [N, 2] -> [N]
        return net.apply(params, x)[:, 0]

    def loss_fn(params, x, y):
        return jnp.mean(jax.vmap(tdjax.monte_carlo_loss)(predict(params, x), y))

    def mse(params, x, y):
        return jnp.mean(jnp.square(predict(params, x) - y))

    def fit(params, y, num_steps):
        """Adam on ½‖f(x_train) − y‖²/n from a fresh optimiser state; logs every `log_every` steps."""

        def step(carry, _):
            p, opt_state = carry
            grads = jax.grad(loss_fn)(p, data.x_train, y)
            updates, opt_state = tx.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), None

        def block(carry, _):
            carry, _ = jax.lax.scan(step, carry, None, length=cfg.log_every)
            p = carry[0]
            return carry, jnp.stack([mse(p, data.x_train, y), mse(p, data.x_train, data.y_train),
                                     mse(p, data.x_interp, data.y_interp)])

        (params, _), logs = jax.lax.scan(block, (params, tx.init(params)), None, length=num_steps // cfg.log_every)
        return params, logs  # logs: [num_steps // log_every, 3] (own target, value on train, value on interp)

    def train(key):
        params0 = net.init(key, data.x_train[:1])
        pre, pre_logs = jax.vmap(lambda y: fit(params0, y, cfg.pretrain_steps))(data.y_pretrain)
        # Fine-tune the K pre-trained networks and train the scratch one (index K) side by side.
        starts = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b[None]]), pre, params0)
        final, logs = jax.vmap(lambda p: fit(p, data.y_train, cfg.finetune_steps))(starts)
        x_all = jnp.concatenate([data.x_train, data.x_interp])
        return dict(
            pretrain_fit=pre_logs[:, :, 0],  # [K, L] MSE on the pre-training target
            train_mse=logs[:, :, 1],  # [K + 1, L] value MSE on training states
            interp_mse=logs[:, :, 2],  # [K + 1, L] value MSE on interpolating states
            pretrained_pred=jax.vmap(predict, in_axes=(0, None))(pre, x_all),  # [K, N]
            final_pred=jax.vmap(predict, in_axes=(0, None))(final, x_all),  # [K + 1, N]
        )

    return train


def run(cfg: Config, show_progress: bool = True) -> dict:
    _validate(cfg)
    with progress_bar(3, desc=NAME, enabled=show_progress) as bar:
        info, data = value_data(cfg)
        bar.update()
        keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
        train = jax.jit(jax.vmap(make_train(cfg, data)))
        bar.set_postfix_str("compiling and training")
        out = jax.tree_util.tree_map(np.asarray, jax.block_until_ready(train(keys)))
        bar.update()
        # Predictions are in the order [train states, interpolating states]; scatter them onto the fine grid.
        order = np.concatenate([np.nonzero(info["train_mask"])[0], np.nonzero(~info["train_mask"])[0]])
        for k in ("pretrained_pred", "final_pred"):
            grid = np.empty_like(out[k])
            grid[..., order] = out[k]
            out[k] = grid
        bar.update()
    pre_target_fine = np.stack(
        [np.sin(k * np.pi * info["x"][:, 0]) * np.sin(k * np.pi * info["x"][:, 1]) for k in cfg.pretrain_frequencies]
        + ([np.where(info["train_mask"], 0.0, np.nan)] if cfg.random_labels else []))
    if cfg.random_labels:
        pre_target_fine[-1, info["train_mask"]] = np.asarray(data.y_pretrain[-1])
    out.update(
        states=info["states"], v=info["v"], y=info["y"], train_mask=info["train_mask"], v_mean=info["v_mean"],
        v_std=info["v_std"], pretrain_target=pre_target_fine, target_names=np.array(info["target_names"]),
        target_frequency=np.array(list(cfg.pretrain_frequencies) + ([np.inf] if cfg.random_labels else [])),
        steps_pretrain=cfg.log_every * np.arange(1, cfg.pretrain_steps // cfg.log_every + 1),
        steps_finetune=cfg.log_every * np.arange(1, cfg.finetune_steps // cfg.log_every + 1),
    )
    return out


def check_claims(cfg: Config, res: dict) -> Claims:
    names = list(res["target_names"])
    K = len(names)
    train, interp = res["train_mse"][:, :, -1], res["interp_mse"][:, :, -1]  # [S, K + 1]
    claims = Claims(NAME, settings=dict(
        grid=f"{cfg.grid}x{cfg.grid} train, {2 * cfg.grid - 1}x{2 * cfg.grid - 1} fine", gamma=cfg.gamma,
        pretrain_targets=[str(n) for n in names], hidden=list(cfg.hidden), learning_rate=cfg.learning_rate,
        pretrain_steps=cfg.pretrain_steps, finetune_steps=cfg.finetune_steps, seeds=cfg.num_seeds))
    pre_fit = res["pretrain_fit"][:, :, -1].mean(axis=0)
    claims.note("Pre-training fit (MSE on the pre-training target, mean over seeds; the targets have variance ≈ 1): "
                + ", ".join(f"{n}: {f:.3g}" for n, f in zip(names, pre_fit)))
    s_train, s_interp = train[:, K], interp[:, K]
    matched = _interp_at_train_level(res, cfg.matched_train_mse)  # [S, K + 1], NaN where never reached
    period = (cfg.grid - 1) / res["target_frequency"]  # period of each target in training-grid spacings
    for k, n in enumerate(names):
        if period[k] > _HIGH_FREQUENCY_PERIOD:
            claims.note(
                f"Control: pre-trained on the smooth target {n} (period {period[k]:.1f} grid spacings): "
                f"final training MSE "
                f"{train[:, k].mean():.3g}, interpolation MSE {interp[:, k].mean():.3g} vs {s_interp.mean():.3g} from "
                f"scratch (ratio {interp[:, k].mean() / s_interp.mean():.2f}; worse in "
                f"{int(np.sum(interp[:, k] > s_interp))}/{cfg.num_seeds} seeds)"
            )
            continue
        claims.check(
            f"Pre-trained on {n} (high-frequency) then fine-tuned on V*: fits the training states "
            "(MSE < 0.01 of the target variance)",
            bool(train[:, k].mean() < 1e-2),
            f"final training MSE {train[:, k].mean():.3g} (from scratch {s_train.mean():.3g}), mean over "
            f"{cfg.num_seeds} seeds",
        )
        wins = int(np.sum(interp[:, k] > s_interp))
        gap, s_gap = interp[:, k] - train[:, k], s_interp - s_train
        m, s_m = matched[:, k], matched[:, K]
        m_text = (f"{np.nanmean(m):.3g} vs {np.nanmean(s_m):.3g}" if np.all(np.isfinite(m)) and np.all(np.isfinite(s_m))
                  else "not reached by every seed")
        claims.check(
            f"Pre-trained on {n}: interpolates worse than from scratch (higher MSE on the interpolating states)",
            bool(interp[:, k].mean() > s_interp.mean() and wins > cfg.num_seeds // 2),
            f"final interpolation MSE {interp[:, k].mean():.3g} vs {s_interp.mean():.3g} from scratch (ratio "
            f"{interp[:, k].mean() / s_interp.mean():.2f}; worse in {wins}/{cfg.num_seeds} seeds); interpolation − "
            f"training MSE {gap.mean():.3g} vs {s_gap.mean():.3g}; interpolation MSE when the training MSE first "
            f"reaches {cfg.matched_train_mse:g}: {m_text}",
        )
    order = np.argsort(res["target_frequency"], kind="stable")
    means = interp[:, :K].mean(axis=0)[order]
    claims.check(
        "The harm grows with the frequency of the pre-training target (our test of the caption's 'high-frequency'; "
        "random labels count as the highest frequency)",
        bool(K > 1 and np.all(np.diff(means) > 0)),
        "final interpolation MSE by target, lowest frequency first: "
        + ", ".join(f"{names[k]}: {interp[:, k].mean():.3g}" for k in order) + f"; from scratch {s_interp.mean():.3g}",
    )
    return claims


def _interp_at_train_level(res: dict, level: float) -> np.ndarray:
    """[S, K + 1]: interpolation MSE at the first logged step whose training MSE is ≤ level (NaN if never)."""
    reached = res["train_mse"] <= level
    first = np.argmax(reached, axis=-1)
    value = np.take_along_axis(res["interp_mse"], first[..., None], axis=-1)[..., 0]
    return np.where(reached.any(axis=-1), value, np.nan)


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["target_names"])
    K = len(names)
    fine = 2 * cfg.grid - 1
    extent = (-0.07, 0.07, -1.2, 0.5)

    def image(ax, values, title, **kw):
        im = ax.imshow(values.reshape(fine, fine), origin="lower", aspect="auto", extent=extent, **kw)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
        return im

    fig, axes = plt.subplots(2, K + 3, figsize=(3.2 * (K + 3), 6.2),
                             gridspec_kw=dict(width_ratios=[1] * (K + 1) + [0.1, 1.6]))
    vmin, vmax = res["y"].min(), res["y"].max()
    for k, n in enumerate(names):
        where = " (training states)" if not np.isfinite(res["target_frequency"][k]) else ""
        image(axes[0, k], res["pretrain_target"][k], f"pre-training target: {n}{where}", cmap="RdBu_r", vmin=-1,
              vmax=1)
        image(axes[1, k], res["final_pred"][0, k], f"fine-tuned from {n} (seed 0)", cmap="viridis", vmin=vmin,
              vmax=vmax)
    image(axes[0, K], res["y"], "target V* (standardised)", cmap="viridis", vmin=vmin, vmax=vmax)
    image(axes[1, K], res["final_pred"][0, K], "from scratch (seed 0)", cmap="viridis", vmin=vmin, vmax=vmax)
    for ax in axes[:, K + 1]:
        ax.axis("off")
    for ax in axes[1, :K + 1]:
        ax.set_xlabel("velocity", fontsize=7)
    axes[0, 0].set_ylabel("position", fontsize=7)
    axes[1, 0].set_ylabel("position", fontsize=7)
    steps = res["steps_finetune"]
    for row, (key, title) in enumerate((("train_mse", "loss on training states"),
                                        ("interp_mse", "loss on interpolating states"))):
        ax = axes[row, K + 2]
        for k, n in enumerate(names + ["from scratch"]):
            curves = res[key][:, k]
            color = "k" if k == K else f"C{k}"
            ax.plot(steps, curves.T, color=color, alpha=0.25, lw=0.7)
            ax.plot(steps, curves.mean(axis=0), color=color, lw=2, label=n if k < K else n)
        ax.set_yscale("log")
        ax.set_title(title + " (MSE, standardised V*)", fontsize=9)
        ax.set_xlabel("fine-tuning step", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Lyle et al. 2022 Fig. 2: MountainCar V*, fine-tuning after high-frequency pre-training", fontsize=11)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    names = list(res["target_names"]) + ["from scratch"]
    rows = []
    for s in range(res["train_mse"].shape[0]):
        for k, n in enumerate(names):
            rows.append(dict(seed=s, network=n, final_train_mse=res["train_mse"][s, k, -1],
                             final_interp_mse=res["interp_mse"][s, k, -1],
                             pretrain_fit=res["pretrain_fit"][s, k, -1] if k < len(names) - 1 else ""))
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, run=run, plot=plot, claims=check_claims,
                        rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.lyle22_fig2 [--tiny] [--out DIR] [--<any Config field> VALUE ...]`; see `--help`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
