"""envpool environments (Atari, ProcGen), imported lazily with errors that say how to fix them.

envpool is an optional dependency (`pip install 'tdjax[envs]'`); ProcGen inside it links against
Qt5 (Debian's libqt5gui5). Both are looked for only when `make_envpool` is called, and a missing
piece becomes a RuntimeError naming the command that installs it rather than a loader traceback.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["make_envpool", "procgen_id", "PROCGEN_GAMES"]

# ProcGen's 16 games and the distribution modes envpool registers for each (envpool 1.2.5,
# envpool/procgen/registration.py; ids are f"{game.capitalize()}{Mode}-v0").
PROCGEN_GAMES: dict[str, tuple[str, ...]] = {
    "bigfish": ("easy", "hard"),
    "bossfight": ("easy", "hard"),
    "caveflyer": ("easy", "hard", "memory", "exploration"),
    "chaser": ("easy", "hard", "extreme"),
    "climber": ("easy", "hard", "exploration"),
    "coinrun": ("easy", "hard", "exploration"),
    "dodgeball": ("easy", "hard", "extreme", "memory"),
    "fruitbot": ("easy", "hard"),
    "heist": ("easy", "hard", "memory", "exploration"),
    "jumper": ("easy", "hard", "memory", "exploration"),
    "leaper": ("easy", "hard", "extreme", "exploration"),
    "maze": ("easy", "hard", "memory", "exploration"),
    "miner": ("easy", "hard", "memory"),
    "ninja": ("easy", "hard", "exploration"),
    "plunder": ("easy", "hard"),
    "starpilot": ("easy", "hard", "extreme"),
}
_PROCGEN_IDS = {f"{g.capitalize()}{m.capitalize()}-v0" for g, modes in PROCGEN_GAMES.items() for m in modes}

_PIP_FIX = "pip install envpool  (or: pip install 'tdjax[envs]')"
_QT_FIX = "sudo apt-get install libqt5gui5  (or: make system-deps)"


def _explain(err: BaseException, task_id: str) -> RuntimeError:
    text = str(err)
    if "qt5gui" in text.lower():
        return RuntimeError(
            f"envpool could not load {task_id!r}: the Qt5 GUI library that ProcGen links against is "
            f"missing ({text}). Fix: {_QT_FIX}"
        )
    if isinstance(err, ModuleNotFoundError) and (err.name or "").split(".")[0] == "envpool":
        return RuntimeError(f"envpool is not installed, so {task_id!r} cannot be created. Fix: {_PIP_FIX}")
    return RuntimeError(f"envpool could not be imported or could not create {task_id!r}: {text}")


def procgen_id(game: str, distribution_mode: str = "easy") -> str:
    """envpool's task id of a ProcGen game: `procgen_id("bigfish")` is "BigfishEasy-v0".

    Game and mode are case-insensitive; an envpool ProcGen id ("HeistHard-v0") is returned unchanged.
    The one name rule for ProcGen in tdjax (experiments and the actor-critic paper configs use it).

    Raises:
      ValueError: an unknown game, or a distribution mode ProcGen does not define for it, listing
        the valid ones.
    """
    if game in _PROCGEN_IDS:
        return game
    key = game.lower() if isinstance(game, str) else game
    if key not in PROCGEN_GAMES:
        raise ValueError(
            f"procgen_id: {game!r} is not a ProcGen game. Fix: use one of {', '.join(PROCGEN_GAMES)} "
            "(or an envpool ProcGen id such as 'BigfishEasy-v0')."
        )
    mode = str(distribution_mode).lower()
    if mode not in PROCGEN_GAMES[key]:
        raise ValueError(
            f"procgen_id: ProcGen's {key} has no distribution mode {distribution_mode!r}. Fix: use one of "
            f"{', '.join(PROCGEN_GAMES[key])}."
        )
    return f"{key.capitalize()}{mode.capitalize()}-v0"


def make_envpool(task_id: str, num_envs: int = 1, **kwargs: Any) -> Any:
    """Creates an envpool environment (e.g. "Pong-v5", "CoinRun-v0"), importing envpool lazily.

    This is the thin entry point for envpool; it returns envpool's own gymnasium-style vector
    environment (stepped from the host, or inside XLA through its `.xla()` handle), not a
    `tdjax.envs.JaxEnv`.

    Args:
      task_id: envpool task id.
      num_envs: number of environments stepped together.
      **kwargs: passed to `envpool.make` (e.g. `seed`, `episodic_life`, `num_levels`).

    Raises:
      RuntimeError: envpool is missing ("pip install envpool") or a system library it loads is
        missing (for ProcGen, libQt5Gui: "sudo apt-get install libqt5gui5").
    """
    try:
        envpool = importlib.import_module("envpool")
    except ImportError as err:
        raise _explain(err, task_id) from err
    kwargs.setdefault("env_type", "gymnasium")
    try:
        return envpool.make(task_id, num_envs=num_envs, **kwargs)
    except ImportError as err:  # ProcGen's shared object is loaded on first use
        raise _explain(err, task_id) from err
    except OSError as err:
        if "qt5gui" in str(err).lower():
            raise _explain(err, task_id) from err
        raise
