# Exercise 4.2 ★★: the squared-speed penalty that regularises the dynamics.
from neuralode_helpers.exercises import check_speed_penalty


def speed_penalty(func, t, z):
    # |f(t_b, z_b)|^2: sum the squares over the state dimension, then average over the batch so
    # that the penalty's weight does not depend on the batch size. It stays a tensor attached
    # to func's parameters, so loss + weight * penalty can be backpropagated.
    return func(t, z).square().sum(-1).mean()


check_speed_penalty(speed_penalty)
