"""Environments for tdjax's training loops.

`make_vec(name, num_envs)` gives E environments behind one interface (`VecEnv`), used by the training
loops: gymnax games (MinAtar, classic control) in pure JAX, or envpool's Atari (`*-v5`) and ProcGen
(`*-v0`) stepped inside jit. `make(name)` is one jittable gymnax environment with auto-reset;
`make_envpool(task_id)` is envpool's own vector environment, imported lazily.

`MaskedImageEnv` is the masked-image classification task of Bengio et al. 2020 §3 (jittable, built from
arrays of images and labels); `register_env` makes such jittable environments reachable by name from
`make_vec` and the training configs, and registers the masked-image tasks "MaskedImage-digits"
(stand-in), "MaskedImage-cifar10" and "MaskedImage-svhn" (`test_env_options` gives their held-out
test environment).
"""

from tdjax.envs import _registry
from tdjax.envs._envpool import PROCGEN_GAMES as PROCGEN_GAMES
from tdjax.envs._envpool import make_envpool as make_envpool
from tdjax.envs._envpool import procgen_id as procgen_id
from tdjax.envs._gymnax import ENV_NAMES as ENV_NAMES
from tdjax.envs._gymnax import EnvSpec as EnvSpec
from tdjax.envs._gymnax import EnvStep as EnvStep
from tdjax.envs._gymnax import JaxEnv as JaxEnv
from tdjax.envs._gymnax import check_name as check_name
from tdjax.envs._gymnax import make as make
from tdjax.envs._gymnax import spec as spec
from tdjax.envs._masked_image import MOVE_NAMES as MOVE_NAMES
from tdjax.envs._masked_image import MaskedImageEnv as MaskedImageEnv
from tdjax.envs._masked_image import MaskedImageEpisodes as MaskedImageEpisodes
from tdjax.envs._masked_image import MaskedImageState as MaskedImageState
from tdjax.envs._registry import MASKED_IMAGE_OPTIONS as MASKED_IMAGE_OPTIONS
from tdjax.envs._registry import RegisteredEnv as RegisteredEnv
from tdjax.envs._registry import register_env as register_env
from tdjax.envs._registry import register_masked_image_env as register_masked_image_env
from tdjax.envs._registry import registered_env as registered_env
from tdjax.envs._registry import registered_env_names as registered_env_names
from tdjax.envs._registry import test_env_options as test_env_options
from tdjax.envs._vec import ATARI_DEFAULTS as ATARI_DEFAULTS
from tdjax.envs._vec import VecEnv as VecEnv
from tdjax.envs._vec import check_env_name as check_env_name
from tdjax.envs._vec import is_envpool_name as is_envpool_name
from tdjax.envs._vec import make_vec as make_vec
from tdjax.envs._vec import vec_spec as vec_spec

__all__ = ["ATARI_DEFAULTS", "ENV_NAMES", "EnvSpec", "EnvStep", "JaxEnv", "MASKED_IMAGE_OPTIONS", "MOVE_NAMES",
           "MaskedImageEnv", "MaskedImageEpisodes", "MaskedImageState", "PROCGEN_GAMES", "RegisteredEnv", "VecEnv", "check_env_name",
           "check_name", "is_envpool_name", "make", "make_envpool", "make_vec", "procgen_id", "register_env",
           "register_masked_image_env", "registered_env", "registered_env_names", "spec", "test_env_options",
           "vec_spec"]

_registry._register_builtins()
