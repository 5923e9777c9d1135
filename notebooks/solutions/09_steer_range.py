# Exercise 09 ★: STEER's end times for b = 0.25.
import numpy as np
import torch

from neuralode_helpers import sample_end_time

generator = torch.Generator().manual_seed(0)
ends = np.array([sample_end_time(0.0, 1.0, 0.25, generator) for _ in range(2000)])
assert ends.min() >= 0.75 and ends.max() <= 1.25
# 2,000 uniform draws come within 0.01 of each end with probability 1 - (1 - 0.02)^2000 ≈ 1
assert ends.min() < 0.76 and ends.max() > 1.24
assert abs(ends.mean() - 1.0) < 0.02  # the mean's sd is 0.5 / sqrt(3 * 2000) ≈ 0.0065
print(f"{ends.min():.4f} ... {ends.max():.4f}, mean {ends.mean():.4f}")
# b >= 1 would allow an end time at or before t0 = 0: an empty or reversed interval, where the
# solve would run backwards and the "prediction" would no longer be a prediction.
print("Well done: the end times cover [0.75, 1.25], centred on 1.")
