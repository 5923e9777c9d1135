# Exercise 9.1 ★ (worked solution): STEER's end times for b = 0.25.
import numpy as np
import torch

from neuralode_helpers import sample_end_time
from neuralode_helpers.exercises import check_steer_range

generator = torch.Generator().manual_seed(0)
ends = np.array([sample_end_time(0.0, 1.0, 0.25, generator) for _ in range(2000)])
print(f"{ends.min():.4f} ... {ends.max():.4f}, mean {ends.mean():.4f}")
# 2,000 uniform draws come within 0.01 of each end with probability 1 - (1 - 0.02)^2000 ≈ 1,
# and their mean's standard deviation is 0.5 / sqrt(12 * 2000) ≈ 0.0032, far inside 0.02.
check_steer_range(ends)
# b >= 1 would allow an end time at or before t0 = 0: an empty or reversed interval, where the
# solve would run backwards and the "prediction" would no longer be a prediction.
