# Exercise 3.1 ★: a field whose network sees (z, sin t, cos t) instead of (z, t).
import torch
from torch import nn

from neuralode_helpers.exercises import check_sincos_field


class SinCosField(nn.Module):
    # The true field sin t (z - c) repeats every 2 pi in t. Feeding sin t and cos t (instead of
    # t) builds that periodicity in: the network cannot tell t from t + 2 pi, so what it learns
    # on the trained range [-1, 11] also holds on [11, 20].
    def __init__(self, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, t, z):
        t = torch.as_tensor(t, dtype=z.dtype).expand(z.shape[:-1])  # 0-d or (B,) -> (B,)
        x = torch.cat([z, torch.sin(t)[..., None], torch.cos(t)[..., None]], dim=-1)
        return self.net(x)


check_sincos_field(SinCosField)

# To train it with the recipe of notebook 03: train(SinCosField(), **SINCOS_RECIPE).
