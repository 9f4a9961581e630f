"""The config-field reference (docs/configs.md), generated from the config dataclasses themselves.

Every field of every registered training config (`tdjax.train.core.register_family`) gets a row:
name, type, default, unit and meaning. The meaning is the field's own trailing comment in the
source; the unit comes from `UNITS`. tests/test_config_docs.py
regenerates the page and fails when it differs from docs/configs.md or when a field has no unit
or no comment,
so the page cannot drift from the code. Regenerate with:

  python -m tdjax.train.config_docs > docs/configs.md
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from typing import Dict, List, Tuple

__all__ = ["UNITS", "field_comments", "config_table", "render"]

_ENV = "environment steps, summed over all environments"
UNITS: Dict[str, str] = {
    # environments
    "env": "name", "env_seed": "seed", "env_backend": "choice", "env_options": "envpool.make / registered-env options",
    "num_levels": "levels", "start_level": "level index", "test_start_level": "level index",
    "test_num_levels": "levels", "num_envs": "environments", "eval_num_envs": "environments",
    # run length and data
    "total_steps": _ENV, "learning_starts": _ENV, "eps_decay_steps": _ENV,
    "num_steps": "vector steps per iteration", "eval_steps": "vector steps per evaluation",
    "train_frequency": "vector steps per update", "buffer_size": "transitions", "batch_size": "transitions / examples",
    "num_updates": "gradient updates", "data": "name", "n_train": "examples (n_T)", "eval_chunk_size": "examples",
    # algorithm and network
    "algo": "choice", "network": "choice", "hidden": "units per layer", "optimizer": "choice",
    "cnn_width": "channels (n_h)", "cnn_extra_layers": "layers (n_L)",
    "torso_width": "channels (n_h); dense units 8n_h / 16n_h",
    "n_hidden": "units (channels) per layer", "n_layers": "layers",
    "loop": "choice",
    # maths
    "gamma": "discount (dimensionless)", "gae_lambda": "dimensionless", "lr": "step size",
    "adam_eps": "dimensionless", "rmsprop_decay": "dimensionless", "rmsprop_eps": "dimensionless",
    "rmsprop_centered": "flag", "max_grad_norm": "global gradient norm", "eps_start": "probability",
    "eps_end": "probability", "n_atoms": "atoms", "v_min": "return", "v_max": "return", "n_quantiles": "quantiles",
    "qr_kappa": "TD error (Huber threshold)", "clip_eps": "probability ratio / value", "clip_value_loss": "flag",
    "entropy_coef": "loss weight", "value_coef": "loss weight", "daac_advantage_coef": "loss weight",
    "normalize_advantages": "flag", "normalize_rewards": "flag",
    # schedules
    "target_update_interval": "gradient updates", "target_ema": "fraction per update",
    "num_epochs": "epochs per iteration",
    "num_minibatches": "minibatches per epoch", "daac_policy_epochs": "epochs per iteration",
    "daac_value_epochs": "epochs per critic update", "daac_value_freq": "iterations",
    "eval_interval": "iterations", "checkpoint_interval": "iterations",
    # probes
    "probe_interval": "gradient updates (value loop) / iterations (actor-critic)", "probe_k": "transitions / examples",
    "probe_rank_eps": "fraction of the spectrum", "probe_srank_delta": "fraction of the spectrum",
    "probe_dormant_tau": "fraction of the mean activation", "probe_sign_window": "steps",
    "probe_sign_steps": "steps per environment", "probe_chunk_size": "examples", "probe_fresh": "flag",
    "probe_max_offset": "steps (temporal offset X)", "probe_offset_samples": "transitions / examples",
    "probe_rho_terms": "flag", "probe_rho_moving_target": "flag", "probe_singular_values": "flag",
    "probe_set": "choice",
    # devices
    "num_devices": "devices", "seed_devices": "devices",
    # offline loop
    "teacher": "folder", "dataset": "folder", "objective": "choice",
    "td_lambda": "dimensionless", "bc_entropy_coef": "loss weight", "pd_entropy_coef": "loss weight",
    "momentum": "dimensionless", "collect": "flag", "collect_epsilon": "probability",
    "collect_frequency": "vector steps per update",
}
"""Field name → unit, shared by every config (one meaning per field name)."""


def field_comments(cls: type) -> Dict[str, str]:
    """Field name → its trailing comment in the class source ("" if it has none)."""
    lines = textwrap.dedent(inspect.getsource(cls)).splitlines()
    trailing = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline)
                if tok.type == tokenize.COMMENT}
    names = {f.name for f in dataclasses.fields(cls)}
    out: Dict[str, str] = {}
    for row, line in enumerate(lines, start=1):
        name = line.strip().split(":", 1)[0]
        if name in names and line.startswith("    ") and not line.startswith("     "):
            out[name] = trailing.get(row, "")
    return out


def _type_name(tp) -> str:
    if typing.get_origin(tp) is None and hasattr(tp, "__name__"):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def config_table(cls: type) -> Tuple[str, List[str]]:
    """(Markdown table of `cls`'s fields, names of fields with no unit in UNITS or no comment)."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    rows = ["| field | type | default | unit | meaning |", "| --- | --- | --- | --- | --- |"]
    missing = []
    for f in dataclasses.fields(cls):
        unit = UNITS.get(f.name)
        meaning = comments.get(f.name, "").replace("|", "\\|")
        if unit is None or not meaning:
            missing.append(f.name)
        rows.append(f"| `{f.name}` | `{_type_name(hints[f.name])}` | `{f.default!r}` | {unit or '?'} | {meaning} |")
    return "\n".join(rows), missing


def render() -> str:
    """The whole docs/configs.md page, for every registered config class."""
    from tdjax.train import core  # registers the families

    parts = ["# Training config fields", "",
             "Generated from the config dataclasses by `python -m tdjax.train.config_docs > docs/configs.md`",
             "(tests/test_config_docs.py fails when this page and the code differ). Every field can be set",
             "from an experiment's command line (`--agent.<field> VALUE`) and with `config.replace(field=...)`.",
             ""]
    for cls, fam in core._FAMILIES.items():
        table, _ = config_table(cls)
        doc = inspect.cleandoc(cls.__doc__ or "")
        parts += [f"## `tdjax.train.{cls.__name__}` ({fam.name})", "", doc, "", table, ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
