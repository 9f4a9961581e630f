"""tdjax: learning dynamics, interference and generalization in deep RL, as pure JAX functions.

Implements Lyle et al. 2022 ("Learning Dynamics and Generalization in Deep Reinforcement Learning")
and Bengio et al. 2020 ("Interference and Generalization in Temporal Difference Learning"). The
analysis library below is pure functions; training loops live in `tdjax.train`, environments in
`tdjax.envs`, networks in `tdjax.networks`, result writing in `tdjax.report`.
"""


# checks
from tdjax._src.checks import InputWarning as InputWarning
from tdjax._src.checks import NonFiniteInputWarning as NonFiniteInputWarning
from tdjax._src.checks import PrecisionWarning as PrecisionWarning
from tdjax._src.checks import debug_checks as debug_checks
from tdjax._src.checks import debug_checks_enabled as debug_checks_enabled
from tdjax._src.checks import checked as checked

# outputs
from tdjax._src.outputs import expected_q as expected_q
from tdjax._src.outputs import reduce_output as reduce_output
from tdjax._src.outputs import scalar_output_fn as scalar_output_fn

# losses
from tdjax._src.losses import td_loss as td_loss
from tdjax._src.losses import q_learning_loss as q_learning_loss
from tdjax._src.losses import double_q_learning_loss as double_q_learning_loss
from tdjax._src.losses import td_lambda_loss as td_lambda_loss
from tdjax._src.losses import monte_carlo_loss as monte_carlo_loss
from tdjax._src.losses import categorical_q_learning_loss as categorical_q_learning_loss
from tdjax._src.losses import quantile_q_learning_loss as quantile_q_learning_loss
from tdjax._src.losses import reinforce_loss as reinforce_loss
from tdjax._src.losses import ppo_clip_loss as ppo_clip_loss
from tdjax._src.losses import value_distillation_loss as value_distillation_loss
from tdjax._src.losses import qa_regression_loss as qa_regression_loss
from tdjax._src.losses import advantage_regression_loss as advantage_regression_loss
from tdjax._src.losses import behaviour_cloning_loss as behaviour_cloning_loss
from tdjax._src.losses import policy_distillation_loss as policy_distillation_loss

# returns
from tdjax._src.returns import generalized_advantage_estimation as generalized_advantage_estimation
from tdjax._src.returns import lambda_returns as lambda_returns

# gradients
from tdjax._src.gradients import InterferenceDerivativeTerms as InterferenceDerivativeTerms
from tdjax._src.gradients import per_example_grads as per_example_grads
from tdjax._src.gradients import gram_matrix as gram_matrix
from tdjax._src.gradients import loss_interference as loss_interference
from tdjax._src.gradients import stiffness as stiffness
from tdjax._src.gradients import interference_derivative as interference_derivative
from tdjax._src.gradients import interference_derivative_terms as interference_derivative_terms
from tdjax._src.gradients import td_sign_variance as td_sign_variance

# correlation
from tdjax._src.correlation import CorrelationInterval as CorrelationInterval
from tdjax._src.correlation import pearson_r as pearson_r
from tdjax._src.correlation import interference_gap_correlation as interference_gap_correlation

# layerwise
from tdjax._src.layerwise import LayerwiseUnsupported as LayerwiseUnsupported
from tdjax._src.layerwise import layerwise_per_example_grads as layerwise_per_example_grads
from tdjax._src.layerwise import layerwise_gram as layerwise_gram

# update_matrix
from tdjax._src.update_matrix import update_matrix as update_matrix
from tdjax._src.update_matrix import policy_update_matrix as policy_update_matrix
from tdjax._src.update_matrix import linearized_update_matrix as linearized_update_matrix
from tdjax._src.update_matrix import update_rank as update_rank
from tdjax._src.update_matrix import srank as srank
from tdjax._src.update_matrix import effective_rank as effective_rank
from tdjax._src.update_matrix import dormant_fraction as dormant_fraction

# dynamics
from tdjax._src.dynamics import NumericalFallbackWarning as NumericalFallbackWarning
from tdjax._src.dynamics import EigenDecomposition as EigenDecomposition
from tdjax._src.dynamics import eigendecompose as eigendecompose
from tdjax._src.dynamics import eigen_coefficients as eigen_coefficients
from tdjax._src.dynamics import eigen_projection as eigen_projection
from tdjax._src.dynamics import eigen_kernel as eigen_kernel
from tdjax._src.dynamics import expected_variation as expected_variation
from tdjax._src.dynamics import rbf_kernel as rbf_kernel
from tdjax._src.dynamics import TDDynamics as TDDynamics
from tdjax._src.dynamics import td_dynamics as td_dynamics
from tdjax._src.dynamics import td_value_trajectory as td_value_trajectory
from tdjax._src.dynamics import mc_value_trajectory as mc_value_trajectory
from tdjax._src.dynamics import td_error as td_error
from tdjax._src.dynamics import td_error_bound as td_error_bound
from tdjax._src.dynamics import LinearFlow as LinearFlow
from tdjax._src.dynamics import kernel_td_dynamics as kernel_td_dynamics
from tdjax._src.dynamics import kernel_mc_dynamics as kernel_mc_dynamics
from tdjax._src.dynamics import kernel_td_trajectory as kernel_td_trajectory
from tdjax._src.dynamics import kernel_mc_trajectory as kernel_mc_trajectory
from tdjax._src.dynamics import td_euler_trajectory as td_euler_trajectory
from tdjax._src.dynamics import mc_euler_trajectory as mc_euler_trajectory
from tdjax._src.dynamics import kernel_td_euler_trajectory as kernel_td_euler_trajectory
from tdjax._src.dynamics import kernel_mc_euler_trajectory as kernel_mc_euler_trajectory
from tdjax._src.dynamics import semi_gradient_update as semi_gradient_update
from tdjax._src.dynamics import second_order_correction as second_order_correction
from tdjax._src.dynamics import second_order_correction_terms as second_order_correction_terms
from tdjax._src.dynamics import td_parameter_steps as td_parameter_steps
from tdjax._src.dynamics import td_parameter_flow as td_parameter_flow

# mdp
from tdjax._src.mdp import TabularMDP as TabularMDP
from tdjax._src.mdp import ValueIterationResult as ValueIterationResult
from tdjax._src.mdp import check_transition_matrix as check_transition_matrix
from tdjax._src.mdp import policy_evaluation as policy_evaluation
from tdjax._src.mdp import value_iteration as value_iteration
from tdjax._src.mdp import policy_markov_chain as policy_markov_chain
from tdjax._src.mdp import circle_mdp as circle_mdp
from tdjax._src.mdp import random_walk_mdp as random_walk_mdp
from tdjax._src.mdp import gridworld_mdp as gridworld_mdp
from tdjax._src.mdp import mountain_car_mdp as mountain_car_mdp
from tdjax._src.mdp import mountain_car_energy_policy as mountain_car_energy_policy

# metrics
from tdjax._src.metrics import OffsetProfile as OffsetProfile
from tdjax._src.metrics import SingularValueSpread as SingularValueSpread
from tdjax._src.metrics import loss_change_by_offset as loss_change_by_offset
from tdjax._src.metrics import interference_by_offset as interference_by_offset
from tdjax._src.metrics import stiffness_by_offset as stiffness_by_offset
from tdjax._src.metrics import singular_value_spread as singular_value_spread

# robustness
from tdjax._src.robustness import PerturbationRobustness as PerturbationRobustness
from tdjax._src.robustness import InterpolationConsistency as InterpolationConsistency
from tdjax._src.robustness import perturbation_robustness as perturbation_robustness
from tdjax._src.robustness import interpolation_consistency as interpolation_consistency

__version__ = "0.1.0"

__all__ = [
    "InputWarning",
    "NonFiniteInputWarning",
    "PrecisionWarning",
    "debug_checks",
    "debug_checks_enabled",
    "checked",
    "expected_q",
    "reduce_output",
    "scalar_output_fn",
    "td_loss",
    "q_learning_loss",
    "double_q_learning_loss",
    "td_lambda_loss",
    "monte_carlo_loss",
    "categorical_q_learning_loss",
    "quantile_q_learning_loss",
    "reinforce_loss",
    "ppo_clip_loss",
    "value_distillation_loss",
    "qa_regression_loss",
    "advantage_regression_loss",
    "behaviour_cloning_loss",
    "policy_distillation_loss",
    "generalized_advantage_estimation",
    "lambda_returns",
    "InterferenceDerivativeTerms",
    "per_example_grads",
    "gram_matrix",
    "loss_interference",
    "stiffness",
    "interference_derivative",
    "interference_derivative_terms",
    "td_sign_variance",
    "CorrelationInterval",
    "pearson_r",
    "interference_gap_correlation",
    "LayerwiseUnsupported",
    "layerwise_per_example_grads",
    "layerwise_gram",
    "update_matrix",
    "policy_update_matrix",
    "linearized_update_matrix",
    "update_rank",
    "srank",
    "effective_rank",
    "dormant_fraction",
    "NumericalFallbackWarning",
    "EigenDecomposition",
    "eigendecompose",
    "eigen_coefficients",
    "eigen_projection",
    "eigen_kernel",
    "expected_variation",
    "rbf_kernel",
    "TDDynamics",
    "td_dynamics",
    "td_value_trajectory",
    "mc_value_trajectory",
    "td_error",
    "td_error_bound",
    "LinearFlow",
    "kernel_td_dynamics",
    "kernel_mc_dynamics",
    "kernel_td_trajectory",
    "kernel_mc_trajectory",
    "td_euler_trajectory",
    "mc_euler_trajectory",
    "kernel_td_euler_trajectory",
    "kernel_mc_euler_trajectory",
    "semi_gradient_update",
    "second_order_correction",
    "second_order_correction_terms",
    "td_parameter_steps",
    "td_parameter_flow",
    "TabularMDP",
    "ValueIterationResult",
    "check_transition_matrix",
    "policy_evaluation",
    "value_iteration",
    "policy_markov_chain",
    "circle_mdp",
    "random_walk_mdp",
    "gridworld_mdp",
    "mountain_car_mdp",
    "mountain_car_energy_policy",
    "OffsetProfile",
    "SingularValueSpread",
    "loss_change_by_offset",
    "interference_by_offset",
    "stiffness_by_offset",
    "singular_value_spread",
    "PerturbationRobustness",
    "InterpolationConsistency",
    "perturbation_robustness",
    "interpolation_consistency",
]
