# Exercise 4.1 ★: checkpoint times for the rule d <= 5 / lam (d: the spacing).
import math

import torch

from neuralode_helpers.exercises import check_checkpoint_times


def checkpoint_times(t0, t1, lam):
    # Between checkpoints the rebuilt z's error grows like e^(lam d); d <= 5 / lam keeps that
    # factor below e^5 ~ 150. Each checkpoint stores a state, so take the fewest intervals that
    # satisfy the rule, n = ceil(lam (t1 - t0) / 5), evenly spaced.
    n = max(1, math.ceil(lam * (t1 - t0) / 5))
    return torch.linspace(t0, t1, n + 1, dtype=torch.float64)


check_checkpoint_times(checkpoint_times)
