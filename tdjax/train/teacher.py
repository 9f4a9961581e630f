"""Teachers: a trained agent saved to a folder and loaded again by path (Lyle et al. 2022 §6).

A teacher is what the offline loop (`tdjax.train.offline`) distils from: the config it was trained
with (which rebuilds its network and environments), its parameters, and the agent functions that
read its outputs. A value-based teacher (`ValueConfig`: DQN, Double DQN, C51, QR-DQN) gives Q-values
(expected Q for distributional heads) and its greedy policy; an actor-critic teacher
(`ActorCriticConfig`: PPO, DAAC, REINFORCE) gives policy logits.

On disk (`save_teacher(path, config, params)`), a folder with

  teacher.json   {"format": "tdjax-teacher/1", "config_class": "ValueConfig", "config": {field: value},
                  "params": [{"path": "params/torso/Dense_0/kernel", "shape": [...], "dtype": "float32"}, ...]}
  params.npz     one array per parameter leaf, named by its path (the "params" list above, in order)

written atomically. `load_teacher(path)` rebuilds the config, builds the agent's network from it and
checks that the saved parameters have exactly the tree, shapes and dtypes the network expects: a
teacher saved with another network is an error naming the first mismatching leaf, not a silent load.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from tdjax.report import atomic_write_bytes
from tdjax.train import actor_critic as ac
from tdjax.train import actor_critic_update as ac_update
from tdjax.train import core
from tdjax.train import value_based as vb

__all__ = ["Teacher", "TeacherError", "save_teacher", "load_teacher", "teacher_from_params"]

FORMAT = "tdjax-teacher/1"
_CONFIGS = {"ValueConfig": vb.ValueConfig, "ActorCriticConfig": ac.ActorCriticConfig}


class TeacherError(ValueError):
    """A teacher folder that cannot be used: missing, unreadable, or saved with another network."""


@dataclasses.dataclass(frozen=True, eq=False)
class Teacher:
    """A frozen trained agent.

    Attributes:
      config: the `ValueConfig` or `ActorCriticConfig` it was trained with.
      params: its parameters (`state.learner.params` of its run).
      agent: `make_agent(config)`: its network, environments and functions.
      path: the folder it was loaded from (None if built in memory).
    """

    config: Any
    params: Any
    agent: Any
    path: Optional[str] = None

    @property
    def kind(self) -> str:
        """"value" (Q-values; greedy policy) or "actor_critic" (policy logits)."""
        return "value" if isinstance(self.config, vb.ValueConfig) else "actor_critic"

    @property
    def num_actions(self) -> int:
        return int(self.agent.env.num_actions)

    @property
    def obs_shape(self) -> tuple:
        return tuple(self.agent.env.obs_shape)

    def output_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
        """`f(params, xs) -> [..., A]`: Q-values (value teachers) or policy logits (actor-critic), at
        observations in their stored units (pixels 0..255 are scaled inside)."""
        if self.kind == "value":
            return self.agent.q_values
        agent = self.agent
        return lambda params, xs: agent.policy_logits(params[agent.actor_name], xs)

    def outputs(self, xs: jax.Array) -> jax.Array:
        """The teacher's outputs at `xs` [..., *obs_shape] with its own parameters."""
        return self.output_fn()(self.params, xs)

    def greedy(self, xs: jax.Array) -> jax.Array:
        """argmax of the outputs: the greedy action of a value teacher, the mode of a policy."""
        return jnp.argmax(self.outputs(xs), axis=-1).astype(jnp.int32)


def _params_template(agent: Any) -> Any:
    """Abstract parameters (ShapeDtypeStructs) of the agent's network(s), without running anything."""
    key = jax.random.key(0)
    if isinstance(agent.config, vb.ValueConfig):
        dummy = jnp.zeros(agent.env.obs_shape, jnp.float32)
        return jax.eval_shape(agent.spec.network.init, key, dummy)
    return jax.eval_shape(lambda k: ac_update.init_params(agent.spec, k), key)


def _params_init(agent: Any, key: jax.Array) -> Any:
    """Freshly initialised parameters of the agent's network(s) (as `_params_template` describes)."""
    if isinstance(agent.config, vb.ValueConfig):
        return agent.spec.network.init(key, jnp.zeros(agent.env.obs_shape, jnp.float32))
    return ac_update.init_params(agent.spec, key)


def _leaf_records(params: Any) -> list:
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return [{"path": jax.tree_util.keystr(p, simple=True, separator="/"), "shape": list(np.shape(x)),
             "dtype": str(np.dtype(x.dtype))} for p, x in flat]


def _config_to_json(config: Any) -> dict:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _tuples(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    return x


def teacher_from_params(config: Any, params: Any, path: Optional[str] = None) -> Teacher:
    """A `Teacher` from a training config and the parameters of its run (no files)."""
    if type(config) not in _CONFIGS.values():
        raise TeacherError(f"teacher: expected a ValueConfig or ActorCriticConfig, got {type(config).__name__}. "
                           "Fix: pass the config the teacher was trained with.")
    agent = core.make_agent(config)
    _check_params(params, _params_template(agent), path or "<in memory>")
    return Teacher(config=config, params=params, agent=agent, path=path)


def _check_params(params: Any, template: Any, where: str) -> None:
    got, want = _leaf_records(params), _leaf_records(template)
    if [r["path"] for r in got] != [r["path"] for r in want]:
        missing = sorted({r["path"] for r in want} - {r["path"] for r in got})
        extra = sorted({r["path"] for r in got} - {r["path"] for r in want})
        raise TeacherError(
            f"teacher {where}: the saved parameters are not those of the network its config builds "
            f"(missing {missing[:3]}, unexpected {extra[:3]}). The teacher was saved with another network "
            "(or another torso/head setting). Fix: load it with the code version and config it was trained "
            "with, or retrain and save the teacher.")
    for g, w in zip(got, want):
        if g["shape"] != w["shape"] or g["dtype"] != w["dtype"]:
            raise TeacherError(
                f"teacher {where}: parameter {g['path']} has shape {g['shape']} {g['dtype']} but the network "
                f"built from the saved config expects {w['shape']} {w['dtype']}: the teacher was saved with "
                "another network. Fix: retrain and save the teacher, or restore the config it was saved with.")


def save_teacher(path: str | Path, config: Any, params: Any) -> Path:
    """Saves a trained agent (its config and `state.learner.params`) to the folder `path`.

    Returns the folder. The files are described in the module docstring.
    """
    teacher = teacher_from_params(config, params)  # checks that the params fit the config's network
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    flat, _ = jax.tree_util.tree_flatten(teacher.params)
    records = _leaf_records(teacher.params)
    import io

    buf = io.BytesIO()
    np.savez(buf, **{f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(flat)})  # type: ignore[arg-type]
    atomic_write_bytes(folder / "params.npz", buf.getvalue())
    meta = {"format": FORMAT, "config_class": type(config).__name__, "config": _config_to_json(config),
            "params": records}
    atomic_write_bytes(folder / "teacher.json", json.dumps(meta, indent=1).encode())
    return folder


def load_teacher(path: str | Path) -> Teacher:
    """The teacher saved in folder `path` by `save_teacher`; `TeacherError` naming the problem and the
    fix when the folder is missing, incomplete, or was saved with another network."""
    folder = Path(path)
    meta_file, params_file = folder / "teacher.json", folder / "params.npz"
    if not meta_file.is_file() or not params_file.is_file():
        raise TeacherError(
            f"teacher: no saved teacher at {str(folder)!r} (expected {meta_file.name} and {params_file.name} "
            "there). Fix: train one and save it with tdjax.train.save_teacher(path, config, state.learner.params), "
            "or correct the path.")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT or meta.get("config_class") not in _CONFIGS:
        raise TeacherError(f"teacher {str(folder)!r}: {meta_file.name} is not a {FORMAT} file "
                           f"(format={meta.get('format')!r}, config_class={meta.get('config_class')!r}).")
    cls = _CONFIGS[meta["config_class"]]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(meta["config"]) - names)
    if unknown:
        raise TeacherError(f"teacher {str(folder)!r}: saved config fields {unknown} do not exist in "
                           f"{cls.__name__} any more. Fix: load it with the tdjax version that saved it.")
    config = cls(**{k: _tuples(v) for k, v in meta["config"].items()})
    agent = core.make_agent(config)
    template = _params_template(agent)
    with np.load(params_file) as z:
        leaves = [z[f"leaf_{i:05d}"] for i in range(len(z.files))]
    want = jax.tree_util.tree_leaves(template)
    if len(leaves) != len(want):
        raise TeacherError(
            f"teacher {str(folder)!r}: {len(leaves)} parameter arrays saved but the network built from its config "
            f"has {len(want)}: the teacher was saved with another network. Fix: retrain and save the teacher.")
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), [jnp.asarray(x) for x in leaves])
    saved = meta["params"]
    if [r["path"] for r in saved] != [r["path"] for r in _leaf_records(template)]:
        raise TeacherError(
            f"teacher {str(folder)!r}: the saved parameter names differ from those of the network built from its "
            "config: the teacher was saved with another network. Fix: retrain and save the teacher.")
    _check_params(params, template, repr(str(folder)))
    return Teacher(config=config, params=params, agent=agent, path=str(folder))
