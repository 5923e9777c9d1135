# Exercise 07 ★: a ResNet's residual blocks as Euler steps.
from neuralode_helpers.exercises import check_resnet_euler


def resnet_euler(blocks, z):
    # K blocks are K Euler steps of size h = 1/K on [0, 1]: z_{k+1} = z_k + (1/K) f_k(z_k).
    # Each block sees the previous block's output, and the skip connection is the "z_k +".
    K = len(blocks)
    for f in blocks:
        z = z + f(z) / K
    return z


check_resnet_euler(resnet_euler)
