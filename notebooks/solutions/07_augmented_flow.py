# Exercise 07 ★★: an augmented neural ODE as a wrapper around any field.
import torch

from neuralode_helpers import odeint
from neuralode_helpers.exercises import check_augmented_flow


def augmented_flow(field, x, p):
    # Lift x (B, d) to [x, 0_p] in R^(d+p): every input starts on the same copy of R^d, so the
    # map is still a function of x alone. Solve on [0, 1], keep the final time ([-1]; odeint
    # returns the whole path) and read out the first d coordinates.
    d = x.shape[-1]
    z0 = torch.cat([x, x.new_zeros(*x.shape[:-1], p)], dim=-1)
    t = torch.tensor([0.0, 1.0], dtype=x.dtype)
    return odeint(field, z0, t)[-1][..., :d]


check_augmented_flow(augmented_flow)
