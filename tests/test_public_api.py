"""The public surface: every name an issue lists is importable from `tdjax`, and re-exports don't drift."""

import importlib

import tdjax

MODULES = ["checks", "outputs", "losses", "gradients", "layerwise", "update_matrix", "dynamics", "mdp", "returns",
           "metrics", "robustness", "correlation"]

# Names used by checks outside this repository (issues 2, 3, 11 and 12).
REQUIRED = """
td_loss q_learning_loss double_q_learning_loss td_lambda_loss monte_carlo_loss categorical_q_learning_loss
quantile_q_learning_loss reinforce_loss ppo_clip_loss value_distillation_loss qa_regression_loss
advantage_regression_loss behaviour_cloning_loss policy_distillation_loss
per_example_grads gram_matrix loss_interference stiffness interference_derivative
interference_derivative_terms td_sign_variance
update_matrix update_rank srank effective_rank dormant_fraction policy_update_matrix linearized_update_matrix
td_value_trajectory mc_value_trajectory kernel_td_trajectory kernel_mc_trajectory policy_evaluation circle_mdp
generalized_advantage_estimation lambda_returns
perturbation_robustness interpolation_consistency
loss_change_by_offset stiffness_by_offset singular_value_spread
interference_gap_correlation
""".split()


def test_required_names_are_public():
    missing = [n for n in REQUIRED if not callable(getattr(tdjax, n, None))]
    assert not missing, missing
    assert set(REQUIRED) <= set(tdjax.__all__)


def test_every_module_name_is_reexported_and_nothing_else():
    expected = []
    for m in MODULES:
        mod = importlib.import_module(f"tdjax._src.{m}")
        for n in mod.__all__:
            assert getattr(tdjax, n) is getattr(mod, n), f"tdjax.{n} is not tdjax._src.{m}.{n}"
            expected.append(n)
    assert sorted(tdjax.__all__) == sorted(expected)
    assert len(set(tdjax.__all__)) == len(tdjax.__all__), "a name is exported twice"
