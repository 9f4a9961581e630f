"""STUB: being written."""

__all__ = ['td_value_trajectory', 'mc_value_trajectory', 'kernel_td_trajectory', 'kernel_mc_trajectory']


def td_value_trajectory(*args, **kwargs):
    raise NotImplementedError('td_value_trajectory')


def mc_value_trajectory(*args, **kwargs):
    raise NotImplementedError('mc_value_trajectory')


def kernel_td_trajectory(*args, **kwargs):
    raise NotImplementedError('kernel_td_trajectory')


def kernel_mc_trajectory(*args, **kwargs):
    raise NotImplementedError('kernel_mc_trajectory')

