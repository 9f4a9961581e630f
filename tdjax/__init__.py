"""tdjax: learning dynamics, interference and generalization in deep RL, as pure JAX functions.

Implements Lyle et al. 2022 ("Learning Dynamics and Generalization in Deep RL") and Bengio et al. 2020
("Interference and Generalization in Temporal Difference Learning").
"""
# DEV NOTE: star imports while modules are written; replaced by explicit re-exports before release.
from tdjax._src.outputs import *  # noqa
from tdjax._src.losses import *  # noqa
from tdjax._src.gradients import *  # noqa
from tdjax._src.update_matrix import *  # noqa
from tdjax._src.dynamics import *  # noqa
from tdjax._src.mdp import *  # noqa

__version__ = "0.1.0"
