# Exercise 1.2 ★★: vector-Jacobian products of f(z) = tanh(W z) by hand.
import torch

from neuralode_helpers.exercises import check_vjp_tanh


def vjp_tanh(W, z, a):
    # f = tanh(u) with u = W z, so df/dz = diag(s) W with s = 1 - tanh(u)^2 (tanh' = 1 - tanh^2).
    # a^T df/dz = (s * a)^T W, i.e. the column vector W^T (s * a).
    # df_i/dW_ij = s_i z_j, so a^T df/dW has entries (s * a)_i z_j: an outer product.
    s = 1 - torch.tanh(W @ z) ** 2
    sa = s * a
    return W.T @ sa, torch.outer(sa, z)


check_vjp_tanh(vjp_tanh)

# To use it in notebook 01's adjoint_solve (which wants flat parameter gradients and a^T df/dt):
#   vjp = lambda t, z, a: (*(g.reshape(-1) for g in vjp_tanh(W, z, a)), torch.zeros(()))
