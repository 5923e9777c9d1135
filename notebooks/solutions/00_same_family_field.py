# Exercise 0.1 ★: a field without z whose solutions are the toy curves e^(1 - cos t) + c.
import torch

from neuralode_helpers.exercises import check_same_family_field


def same_family_field(t, z):
    # Differentiate the curve, d/dt e^(1 - cos t) = sin t e^(1 - cos t) (chain rule:
    # d/dt (1 - cos t) = sin t). The offset c drops out, so every curve of the family solves
    # this ODE, which never looks at z. The ones_like(z) gives one slope per entry of z.
    return torch.sin(t) * torch.exp(1 - torch.cos(t)) * torch.ones_like(z)


check_same_family_field(same_family_field)
