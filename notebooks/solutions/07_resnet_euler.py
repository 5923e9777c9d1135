# Exercise 07 ★: a ResNet's residual blocks as Euler steps.
from neuralode_helpers.exercises import check_resnet_euler


def resnet_euler(blocks, h):
    # L blocks are L Euler steps of size 1/L on [0, 1]: h_{l+1} = h_l + (1/L) f_l(h_l). Each
    # block sees the previous block's output, and the skip connection is the "h_l +".
    L = len(blocks)
    for f in blocks:
        h = h + f(h) / L
    return h


check_resnet_euler(resnet_euler)
