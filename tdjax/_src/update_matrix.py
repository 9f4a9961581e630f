"""STUB: being written."""

__all__ = ['update_matrix', 'policy_update_matrix', 'linearized_update_matrix', 'update_rank', 'srank', 'effective_rank', 'dormant_fraction']


def update_matrix(*args, **kwargs):
    raise NotImplementedError('update_matrix')


def policy_update_matrix(*args, **kwargs):
    raise NotImplementedError('policy_update_matrix')


def linearized_update_matrix(*args, **kwargs):
    raise NotImplementedError('linearized_update_matrix')


def update_rank(*args, **kwargs):
    raise NotImplementedError('update_rank')


def srank(*args, **kwargs):
    raise NotImplementedError('srank')


def effective_rank(*args, **kwargs):
    raise NotImplementedError('effective_rank')


def dormant_fraction(*args, **kwargs):
    raise NotImplementedError('dormant_fraction')

