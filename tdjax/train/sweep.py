"""Grids of training runs for Bengio et al. 2020 §4 (App. B.1): n_h × n_L × n_T × seeds (× learning rates).

    rows = run_grid(base_config, GridConfig(...), key, "grid.csv")

`base_config` is any of the families' configs: `SupervisedConfig` (classification, regression),
`ValueConfig(algo="double_dqn", env="MaskedImage-…")` or `ActorCriticConfig(algo="reinforce",
env="MaskedImage-…")`. Each run of the grid is a CELL (n_h, n_L, n_T, lr, seed); its row holds the
train and test performance, the generalisation gap (train minus test performance: accuracy, minus
the loss for regression, undiscounted return for agents) and ρ̄ (mean function interference over
pairs of training inputs, Bengio eq. 8) after training and averaged over training.

Programs. Cells that share shapes run as ONE vmapped XLA program; a capacity (n_h, n_L) changes the
parameter shapes, so each capacity is its own program:
  * supervised: every (n_T, lr, seed) of a capacity in one `jax.jit(jax.vmap(run))`: n_T is a traced
    mask over a fixed training pool and lr lives in the optimizer state (`tdjax.train.supervised`);
  * agents (Double DQN, REINFORCE on a masked-image task): every (n_T, lr, seed) of a capacity in one
    `jax.jit(jax.vmap(run))` too: the training environment holds the largest n_T images of the grid
    and a run's episodes draw their seeds from its first n_T (`MaskedImageEnv.reset(key, pool)`,
    `agent.init_with(key, n_train, lr)`), and the learning rate lives in the optimizer state. A cell
    equals the run configured with env_options num_images = n_T and that lr (same draws, same
    parameters). Its train return is the mean over the first min(eval_images, n_T) images; ρ̄ is
    the mean Gram entry over pairs i < j < min(probe_k, n_T) of the first probe_k images' initial
    observations (as `supervised.mean_interference`).
`vmapped=False` runs the same programs with one cell per call (the benchmark's baseline).

Seeds: cell (…, seed s) trains from `fold_in(key, s)`, whatever else it shares a program with, so a
cut-and-resumed grid, a vmapped and a looped grid give the same rows (up to float reassociation).

Resumable: rows land in ONE CSV table (pandas-readable) as each program finishes, rewritten
atomically (`tdjax.report.save_csv`); a rerun with the same file skips the cells it holds. Every row
carries `config_id`, a hash of the base config and the measurement settings; a file written for
another config is an error, never silently mixed.

Many devices / hosts (docs/sweeps.md): `part=(i, n)` runs every n-th program starting at i, so n
processes (one per device or host) share the grid, each with its own CSV; `seed_devices > 1` in a
supervised base config shards the vmapped runs of a program over the mesh's "seeds" axis.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import itertools
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tdjax._src.gradients import gram_matrix
from tdjax.report import save_csv
from tdjax.train import core
from tdjax.train import mesh as mesh_lib
from tdjax.train import supervised as sup

__all__ = ["GridConfig", "Cell", "PAPER_GRIDS", "paper_grid", "grid_cells", "capacity_config", "run_grid",
           "read_rows", "config_id", "COLUMNS", "rl_evaluation"]


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """The axes of a grid (Bengio et al. 2020, App. B.1). Every axis must be non-empty."""

    n_hidden: Tuple[int, ...] = (8, 16)  # n_h values (hidden units, or channels of the conv net)
    n_layers: Tuple[int, ...] = (0,)  # n_L values (extra layers)
    n_train: Tuple[int, ...] = (20, 100)  # n_T values (training examples / images)
    seeds: int = 3  # seeds per (n_h, n_L, n_T, lr): initial parameters, minibatches, exploration
    lrs: Tuple[float, ...] = ()  # learning rates; empty: the base config's lr only

    def replace(self, **changes: Any) -> "GridConfig":
        return dataclasses.replace(self, **changes)


PAPER_GRIDS: Dict[str, GridConfig] = {
    "svhn": GridConfig((8, 16, 32), (0, 1, 2, 3), (20, 100, 250, 500, 1000, 5000, 10000, 50000), 3),
    "cifar10": GridConfig((16, 32, 64), (0, 1, 2, 3), (20, 100, 250, 500, 1000, 5000, 10000, 50000), 3),
    "sarcos": GridConfig((16, 32, 64, 128, 256), (0, 1, 2, 3), (20, 100, 250, 500, 1000, 5000, 10000, 44484), 3),
    # California's MLP has a fixed depth, 3 hidden layers: n_layers=2 of `bengio_mlp` (1 + n_layers).
    "california": GridConfig((16, 32, 64, 128), (2,), (20, 100, 250, 500, 1000, 5000, 10000), 3),
}
"""Bengio et al. 2020, App. B.1: the grid of each data set ("3 or more seeds")."""


def paper_grid(data: str) -> GridConfig:
    """The App. B.1 grid of `data` ("svhn", "cifar10", "sarcos", "california"); ValueError otherwise."""
    if data not in PAPER_GRIDS:
        raise ValueError(f"paper_grid: unknown data set {data!r}. Fix: use one of {', '.join(PAPER_GRIDS)}.")
    return PAPER_GRIDS[data]


class Cell(NamedTuple):
    n_hidden: int
    n_layers: int
    n_train: int
    lr: float
    seed: int


COLUMNS = ("config_id", "family", "algo", "data", "label", "n_hidden", "n_layers", "n_train", "lr", "seed",
           "train_perf", "test_perf", "gap", "rho_bar", "rho_bar_during", "seconds")
"""The columns of a grid's CSV (one row per cell)."""


def _check_grid(grid: GridConfig) -> None:
    if not isinstance(grid, GridConfig):
        raise ValueError(f"run_grid: expected a tdjax.train.sweep.GridConfig, got {type(grid).__name__}.")
    for name in ("n_hidden", "n_layers", "n_train"):
        values = getattr(grid, name)
        if len(values) == 0:
            raise ValueError(f"GridConfig.{name} is empty: the grid has no runs. Fix: give at least one value, "
                             f"e.g. {name}=({ {'n_hidden': 16, 'n_layers': 0, 'n_train': 100}[name] },).")
        if len(set(values)) != len(values):
            raise ValueError(f"GridConfig.{name}={values!r} repeats a value. Fix: list each value once.")
    if min(grid.n_hidden) < 1 or min(grid.n_layers) < 0 or min(grid.n_train) < 1:
        raise ValueError(f"GridConfig: n_hidden >= 1, n_layers >= 0 and n_train >= 1 are needed, got {grid}.")
    if grid.seeds < 1:
        raise ValueError(f"GridConfig.seeds={grid.seeds}: the grid has no runs. Fix: seeds >= 1 (the paper: 3+).")
    if any((not lr > 0) for lr in grid.lrs):
        raise ValueError(f"GridConfig.lrs={grid.lrs!r}: learning rates must be > 0.")


def grid_cells(base: Any, grid: GridConfig) -> List[Cell]:
    """Every cell of the grid, capacity-major (the order programs run in)."""
    _check_grid(grid)
    lrs = grid.lrs or (float(base.lr),)
    return [Cell(h, l, t, float(lr), s) for h, l, t, lr, s in
            itertools.product(grid.n_hidden, grid.n_layers, grid.n_train, lrs, range(grid.seeds))]


def _family(base: Any) -> str:
    return core.family_of(base).name


def capacity_config(base: Any, n_hidden: int, n_layers: int) -> Any:
    """`base` with capacity (n_h, n_L): `n_hidden`/`n_layers` (supervised) or the Bengio conv net's
    `cnn_width`/`cnn_extra_layers` (agents, `network="bengio_cnn"`)."""
    if _family(base) == "supervised":
        return base.replace(n_hidden=int(n_hidden), n_layers=int(n_layers))
    return base.replace(cnn_width=int(n_hidden), cnn_extra_layers=int(n_layers))


def config_id(base: Any, eval_images: int) -> str:
    """A short hash of the base config and the measurement settings (the rows' `config_id`)."""
    return hashlib.sha1(f"{base!r}|{eval_images}".encode()).hexdigest()[:12]


_INT_COLUMNS = ("n_hidden", "n_layers", "n_train", "seed")
_FLOAT_COLUMNS = ("lr", "train_perf", "test_perf", "gap", "rho_bar", "rho_bar_during", "seconds")


def read_rows(path: Optional[str]) -> List[dict]:
    """The rows of a grid CSV (numbers parsed), [] when the file does not exist."""
    if path is None or not Path(path).exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update({k: int(r[k]) for k in _INT_COLUMNS}, **{k: float(r[k]) for k in _FLOAT_COLUMNS})
    return rows


def _cell_of(row: dict) -> Cell:
    return Cell(int(row["n_hidden"]), int(row["n_layers"]), int(row["n_train"]), float(row["lr"]), int(row["seed"]))


# ----------------------------------------------------------------------------------------------------
# Supervised programs: all (n_T, lr, seed) cells of one capacity, vmapped.


def _pad(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@functools.lru_cache(maxsize=16)
def _supervised_program(cfg: Any) -> Tuple[Any, Callable]:
    agent = core.make_agent(cfg)

    def run(key, n_train, lr):
        state, metrics = agent.run(agent.init_with(key, n_train, lr), 0, agent.num_iterations)
        return metrics.eval  # [T] each

    batched = jax.jit(jax.vmap(run))
    return agent, batched


def _measure_supervised(base: Any, cells: Sequence[Cell], key: jax.Array, vmapped: bool,
                        eval_images: int) -> List[dict]:
    del eval_images
    cfg = capacity_config(base, cells[0].n_hidden, cells[0].n_layers)
    cfg = cfg.replace(n_train=max(c.n_train for c in cells))  # validated against the pool: the largest n_T
    agent, program = _supervised_program(cfg)
    keys = jnp.stack([jax.random.fold_in(key, c.seed) for c in cells])
    ns = jnp.asarray([c.n_train for c in cells], jnp.int32)
    lrs = jnp.asarray([c.lr for c in cells], jnp.float32)
    t0 = time.perf_counter()
    if vmapped:
        d = cfg.seed_devices
        r = len(cells)
        if d > 1:  # pad to a multiple of the devices and shard the run axis over "seeds"
            pad = _pad(r, d) - r
            keys, ns, lrs = (jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) for a in (keys, ns, lrs))
            m = mesh_lib.make_mesh(d, 1)
            sharding = jax.sharding.NamedSharding(m, jax.sharding.PartitionSpec(mesh_lib.SEEDS))
            keys, ns, lrs = (jax.device_put(a, sharding) for a in (keys, ns, lrs))
        ev = jax.tree.map(lambda x: np.asarray(x)[:r], jax.block_until_ready(program(keys, ns, lrs)))
    else:
        outs = [jax.block_until_ready(program(keys[i:i + 1], ns[i:i + 1], lrs[i:i + 1])) for i in range(len(cells))]
        ev = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *outs)
    seconds = (time.perf_counter() - t0) / len(cells)
    ds = agent.spec.env
    classify = ds.task == "classification"
    rows = []
    for i, c in enumerate(cells):
        evaluated = np.isfinite(ev.rho_bar[i])
        last = np.flatnonzero(evaluated)[-1]
        train_perf = ev.train_acc[i, last] if classify else -ev.train_loss[i, last]
        test_perf = ev.test_acc[i, last] if classify else -ev.test_loss[i, last]
        rows.append(dict(family="supervised", algo=ds.task, data=ds.name, label=ds.label, n_hidden=c.n_hidden,
                         n_layers=c.n_layers, n_train=c.n_train, lr=c.lr, seed=c.seed, train_perf=float(train_perf),
                         test_perf=float(test_perf), gap=float(ev.gap[i, last]), rho_bar=float(ev.rho_bar[i, last]),
                         rho_bar_during=float(np.mean(ev.rho_bar[i][evaluated])), seconds=seconds))
    return rows


# ----------------------------------------------------------------------------------------------------
# Agents on the masked-image task: one program per capacity, vmapped over (n_T, lr, seed).


def _masked_envs(cfg: Any) -> Tuple[Any, Any]:
    """The (training, test) masked-image environments of an agent's config (single, unvectorised)."""
    from tdjax import envs as envs_lib

    reg = envs_lib.registered_env(cfg.env)
    if reg is None:
        raise ValueError(f"{type(cfg).__name__}.env={cfg.env!r}: the grid's agents play a registered "
                         "masked-image task. Fix: use env='MaskedImage-digits' (stand-in), '-svhn' or '-cifar10'.")
    opts = dict(cfg.env_options)
    return reg.factory(**opts), reg.factory(**envs_lib.test_env_options(cfg.env, opts))


def rl_evaluation(env: Any, act: Callable[[jax.Array], jax.Array], num_images: int,
                  count: Optional[Any] = None) -> jax.Array:
    """Mean undiscounted return of one episode on each of the first `num_images` images of `env`
    (a `MaskedImageEnv`; `reset_to(slot)`), acting with `act(obs) -> action` (greedy: deterministic);
    with `count` (traced or not), only slots < `count` are averaged (a run on the first n_T images)."""
    slots = jnp.arange(num_images)

    def episode(slot):
        state, obs = env.reset_to(slot)

        def step(carry, _):
            state, obs, total, done = carry
            state2, obs2, r, term, trunc = env.transition(state, act(obs))
            total = total + jnp.where(done, 0.0, r)
            return (state2, obs2, total, done | term | trunc), None

        (_, _, total, _), _ = jax.lax.scan(step, (state, obs, jnp.zeros((), jnp.float32), jnp.zeros((), bool)),
                                           None, length=env.max_steps)
        return total

    returns = jax.vmap(episode)(slots)
    if count is None:
        return jnp.mean(returns)
    weight = slots < count
    return jnp.sum(jnp.where(weight, returns, 0.0)) / jnp.maximum(jnp.sum(weight), 1)


@functools.lru_cache(maxsize=16)
def _rl_program(cfg: Any, eval_images: int, probe_k: int) -> Tuple[Any, Any, Callable]:
    """(training env, test env, `jax.jit(jax.vmap(run))`) of one capacity: `run(key, n_train, lr)`
    trains from `agent.init_with(key, n_train, lr)` and returns (train return, test return, ρ̄, ρ̄
    during training)."""
    agent = core.make_agent(cfg)
    train_env, test_env = _masked_envs(cfg)
    family = _family(cfg)
    n_images = train_env.num_images  # the largest n_T of the program
    n_test = min(eval_images, test_env.num_images)
    n_tr = min(eval_images, n_images)
    k = min(probe_k, n_images)

    def outputs(params, obs):
        if family == "value_based":
            return agent.q_values(params, obs)
        return agent.policy_logits(params[agent.spec.actor_name], obs)

    def run(key, n_train, lr):
        state, metrics = agent.run(agent.init_with(key, n_train, lr), 0, agent.num_iterations)
        params = state.learner.params
        act = lambda obs: jnp.argmax(outputs(params, obs))  # greedy: the agents' test-time policy
        train_ret = rl_evaluation(train_env, act, n_tr, count=n_train)
        test_ret = rl_evaluation(test_env, act, n_test)
        obs0 = jax.vmap(lambda s: train_env.reset_to(s)[1])(jnp.arange(k))
        gram = gram_matrix(lambda p, x: jnp.max(outputs(p, x)), params, obs0)
        idx = jnp.arange(k)
        pair = (idx[:, None] < idx[None, :]) & (idx[None, :] < n_train)
        pairs = jnp.sum(pair)
        rho = jnp.where(pairs > 0, jnp.sum(jnp.where(pair, gram, 0.0)) / jnp.maximum(pairs, 1), jnp.nan)
        probes = getattr(metrics, "probes", None)
        during = (jnp.nanmean(jnp.where(probes.probed, probes.interference, jnp.nan))
                  if probes is not None and hasattr(probes, "interference") else jnp.full((), jnp.nan))
        return train_ret, test_ret, rho, during

    return train_env, test_env, jax.jit(jax.vmap(run))


def _measure_rl(base: Any, cells: Sequence[Cell], key: jax.Array, vmapped: bool, eval_images: int) -> List[dict]:
    n_max = max(c.n_train for c in cells)
    opts = dict(base.env_options)
    opts["num_images"] = int(n_max)  # the training environment holds the largest n_T; runs use their first n_T
    cfg = capacity_config(base, cells[0].n_hidden, cells[0].n_layers).replace(env_options=tuple(sorted(opts.items())))
    train_env, test_env, program = _rl_program(cfg, eval_images, getattr(base, "probe_k", 32))
    if train_env.num_images != n_max:
        raise ValueError(f"GridConfig.n_train={n_max}: the {cfg.env} training split holds only "
                         f"{train_env.num_images} images. Fix: use n_train <= {train_env.num_images}.")
    keys = jnp.stack([jax.random.fold_in(key, c.seed) for c in cells])
    ns = jnp.asarray([c.n_train for c in cells], jnp.int32)
    lrs = jnp.asarray([c.lr for c in cells], jnp.float32)
    t0 = time.perf_counter()
    if vmapped:
        out = [np.asarray(x) for x in jax.block_until_ready(program(keys, ns, lrs))]
    else:
        parts = [jax.block_until_ready(program(keys[i:i + 1], ns[i:i + 1], lrs[i:i + 1])) for i in range(len(cells))]
        out = [np.concatenate([np.asarray(p[j]) for p in parts]) for j in range(4)]
    seconds = (time.perf_counter() - t0) / len(cells)
    train_ret, test_ret, rho, during = out
    name = getattr(train_env, "name", cfg.env)
    data = cfg.env.split("MaskedImage-")[-1]
    start = opts.get("start_image", 0)
    rows = []
    for i, c in enumerate(cells):
        label = name.replace(f" {start}:{start + n_max}]", f" {start}:{start + c.n_train}]")  # this run's images
        if data in sup.DATASETS:  # say what the images are (a stand-in or the paper's)
            label = f"{label}: {sup.load_dataset(data).label}"
        rows.append(dict(family=_family(cfg), algo=cfg.algo, data=cfg.env, label=label, n_hidden=c.n_hidden,
                         n_layers=c.n_layers, n_train=c.n_train, lr=c.lr, seed=c.seed,
                         train_perf=float(train_ret[i]), test_perf=float(test_ret[i]),
                         gap=float(train_ret[i] - test_ret[i]), rho_bar=float(rho[i]),
                         rho_bar_during=float(during[i]), seconds=seconds))
    return rows


# ----------------------------------------------------------------------------------------------------
# The grid.


def run_grid(base: Any, grid: GridConfig, key: jax.Array, path: Optional[str] = None, *, vmapped: bool = True,
             part: Tuple[int, int] = (0, 1), eval_images: int = 500,
             progress: Optional[Callable[[int, int], None]] = None) -> List[dict]:
    """Trains every cell of `grid` on `base` (skipping those already in `path`) and returns all rows.

    Args:
      base: the family's config; its capacity, n_T and lr fields are overridden per cell.
      grid: the axes (`GridConfig`; `paper_grid(name)` for App. B.1's).
      key: the root key; cell (…, seed s) trains from `fold_in(key, s)`.
      path: the CSV the rows land in (rewritten atomically after every program); None: no file.
      vmapped: run the cells of a program together (False: one by one, the same code).
      part: (i, n): run only programs i, i + n, i + 2n, … (one process per device or host).
      eval_images: agents: episodes (images) over which the train and test returns are averaged.
      progress: called as `progress(done_programs, total_programs)` after each program.

    Returns:
      The rows (dicts with `COLUMNS`) of this file: the ones read back and the new ones.
    """
    family = _family(base)
    cells = grid_cells(base, grid)
    i_part, n_part = part
    if not (isinstance(n_part, int) and n_part >= 1 and isinstance(i_part, int) and 0 <= i_part < n_part):
        raise ValueError(f"run_grid: part must be (i, n) with 0 <= i < n, got {part!r}.")
    if family == "supervised":
        pool = sup.load_dataset(base.data).pool_size
        too_big = [t for t in grid.n_train if t > pool]
        if too_big:
            raise ValueError(f"GridConfig.n_train={grid.n_train}: {too_big} exceed the {pool} training examples of "
                             f"{base.data!r}. Fix: use n_train <= {pool} (or the real data set's files).")
    cid = config_id(base, eval_images)
    rows = read_rows(path)
    foreign = {r["config_id"] for r in rows} - {cid}
    if foreign:
        raise ValueError(f"run_grid: {path} holds rows of another config (config_id {sorted(foreign)} != {cid}). "
                         "Fix: use a new file for this config, or delete that one.")
    done = {_cell_of(r) for r in rows}
    programs: Dict[Tuple[int, int], List[Cell]] = {}
    for c in cells:
        programs.setdefault((c.n_hidden, c.n_layers), []).append(c)
    mine = [cap for j, cap in enumerate(programs) if j % n_part == i_part]
    measure = _measure_supervised if family == "supervised" else _measure_rl
    for j, cap in enumerate(mine):
        pending = [c for c in programs[cap] if c not in done]
        if pending:
            new = measure(base, pending, core.typed_key(key), vmapped, eval_images)
            rows += [dict(config_id=cid, **r) for r in new]
            if path is not None:
                save_csv(path, rows, fieldnames=COLUMNS)
        if progress is not None:
            progress(j + 1, len(mine))
    return rows
