# Exercise 07 ★★★ (worked answer): a narrower gap between disk and ring.
#
# The plain neural ODE's class-0 region (the disk) is the preimage of a half-plane under a
# homeomorphism of the plane, so it is connected and unbounded: it cannot be an island around
# the disk. It has to reach out through the ring, along a channel that passes between sample
# points of the ring. With r_inner = 0.9 the ring comes closer to the disk, and the channel
# has to squeeze through where the two classes are nearly touching. Expect, for the plain
# model:
#
# - a higher final loss and a lower test accuracy: every test point of the ring that falls
#   into the channel, and every disk point left outside the squeezed region, is misclassified,
#   and the closer the classes, the more test points lie in the critical zone;
# - more function evaluations (NFE) per solve, growing during training: to make the channel
#   thin, the flow has to stretch a small region of the plane a lot, which needs a fast-
#   changing field, and dopri5 responds with more and smaller steps;
# - slower, noisier training.
#
# The channel cannot "move away" because there is nowhere to go: whichever way it leaves the
# disk, it has to cross the ring, which surrounds the disk on every side. Only its width and
# position along the ring are free, and the data near the gap pin both down.
#
# The augmented model (one extra dimension) barely notices: it can lift the disk out of the
# plane and separate it from the ring with a plane in 3-D, so its class-0 region is a bounded
# blob around the disk, whatever the gap. Its loss, accuracy and NFE change little.
#
# To see it, rerun the circles experiment (Going further) with
# nested_circles(512, seed=0, r_inner=0.9) (and the same for the test set), and compare the
# two models' decision-region plots, test accuracy and the NFE per forward pass.
