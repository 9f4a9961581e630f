"""STUB: being written."""

__all__ = ['per_example_grads', 'gram_matrix', 'loss_interference', 'stiffness', 'interference_derivative', 'interference_derivative_terms', 'td_sign_variance']


def per_example_grads(*args, **kwargs):
    raise NotImplementedError('per_example_grads')


def gram_matrix(*args, **kwargs):
    raise NotImplementedError('gram_matrix')


def loss_interference(*args, **kwargs):
    raise NotImplementedError('loss_interference')


def stiffness(*args, **kwargs):
    raise NotImplementedError('stiffness')


def interference_derivative(*args, **kwargs):
    raise NotImplementedError('interference_derivative')


def interference_derivative_terms(*args, **kwargs):
    raise NotImplementedError('interference_derivative_terms')


def td_sign_variance(*args, **kwargs):
    raise NotImplementedError('td_sign_variance')

