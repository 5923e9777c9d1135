# Exercise 05 ★: the spiral's field A z^(o3) for a batch of states.
import torch

from neuralode_helpers.datasets import SPIRAL_A
from neuralode_helpers.exercises import check_cubic_field


def cubic_field(A, z):
    # z holds one state per row, shape (B, D). For a single column vector the field is
    # A z^(o3); transposing it gives the row (z^(o3))^T A^T, so for the whole batch at once
    # (z**3) @ A.T. The cube acts on each coordinate before the matrix mixes them.
    return (z**3) @ A.T


check_cubic_field(cubic_field)

# The field of section 1 at its starting point z(0) = (2, 0): A (8, 0) = (-0.8, -16).
print(cubic_field(torch.tensor(SPIRAL_A), torch.tensor([[2.0, 0.0]])))
