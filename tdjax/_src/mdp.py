"""STUB: being written."""

__all__ = ['policy_evaluation', 'circle_mdp']


def policy_evaluation(*args, **kwargs):
    raise NotImplementedError('policy_evaluation')


def circle_mdp(*args, **kwargs):
    raise NotImplementedError('circle_mdp')

