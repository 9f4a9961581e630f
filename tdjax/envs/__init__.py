"""Environments for tdjax's training loops.

`make(name)` gives a jittable gymnax environment (MinAtar, CartPole, ...) with auto-reset and float32
observations; `make_envpool(task_id)` reaches Atari and ProcGen through envpool, imported lazily.
"""

from tdjax.envs._envpool import make_envpool as make_envpool
from tdjax.envs._gymnax import ENV_NAMES as ENV_NAMES
from tdjax.envs._gymnax import EnvSpec as EnvSpec
from tdjax.envs._gymnax import EnvStep as EnvStep
from tdjax.envs._gymnax import JaxEnv as JaxEnv
from tdjax.envs._gymnax import check_name as check_name
from tdjax.envs._gymnax import make as make
from tdjax.envs._gymnax import spec as spec

__all__ = ["ENV_NAMES", "EnvSpec", "EnvStep", "JaxEnv", "check_name", "make", "make_envpool", "spec"]
