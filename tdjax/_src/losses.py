"""STUB: being written."""

__all__ = ['td_loss', 'q_learning_loss', 'double_q_learning_loss', 'td_lambda_loss', 'monte_carlo_loss', 'categorical_q_learning_loss', 'quantile_q_learning_loss', 'reinforce_loss', 'ppo_clip_loss', 'value_distillation_loss', 'qa_regression_loss', 'advantage_regression_loss', 'behaviour_cloning_loss', 'policy_distillation_loss']


def td_loss(*args, **kwargs):
    raise NotImplementedError('td_loss')


def q_learning_loss(*args, **kwargs):
    raise NotImplementedError('q_learning_loss')


def double_q_learning_loss(*args, **kwargs):
    raise NotImplementedError('double_q_learning_loss')


def td_lambda_loss(*args, **kwargs):
    raise NotImplementedError('td_lambda_loss')


def monte_carlo_loss(*args, **kwargs):
    raise NotImplementedError('monte_carlo_loss')


def categorical_q_learning_loss(*args, **kwargs):
    raise NotImplementedError('categorical_q_learning_loss')


def quantile_q_learning_loss(*args, **kwargs):
    raise NotImplementedError('quantile_q_learning_loss')


def reinforce_loss(*args, **kwargs):
    raise NotImplementedError('reinforce_loss')


def ppo_clip_loss(*args, **kwargs):
    raise NotImplementedError('ppo_clip_loss')


def value_distillation_loss(*args, **kwargs):
    raise NotImplementedError('value_distillation_loss')


def qa_regression_loss(*args, **kwargs):
    raise NotImplementedError('qa_regression_loss')


def advantage_regression_loss(*args, **kwargs):
    raise NotImplementedError('advantage_regression_loss')


def behaviour_cloning_loss(*args, **kwargs):
    raise NotImplementedError('behaviour_cloning_loss')


def policy_distillation_loss(*args, **kwargs):
    raise NotImplementedError('policy_distillation_loss')

