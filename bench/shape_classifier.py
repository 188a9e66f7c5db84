"""A small CNN that tells discs (class 0) from squares (class 1), trained on the REAL toy images only: the
strict second opinion of ``bench/toy_shapes_check.py`` (the usual "classify the fakes with a classifier
trained on real data" check of a conditional GAN).

Training augments the reals with blur, contrast, background offset and noise, so that the classifier
judges the shape and not how clean the pixels are (fakes have soft edges and grey backgrounds). Its
accuracy on held-out real images is reported next to every figure it produces. It is strict about
corners: the real squares' corners are perfectly sharp, so a fake square whose corners are rounded by
one pixel is called a disc (measured: 40-kimg fakes that the fill rule and the eye see as squares).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ShapeNet(nn.Module):
    """[N, 1, H, W] in [-1, 1] -> logits [N, 2]. Global max pooling makes it translation invariant."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).amax(dim=(2, 3)))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """x [N, 1, H, W] in [-1, 1]: random blur, contrast, background offset, pixel noise and flips."""
    n = x.shape[0]
    blur = torch.tensor([1.0, 2.0, 1.0]) / 4
    k = (blur[:, None] * blur[None, :])[None, None]  # [1, 1, 3, 3]
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    pick = (torch.rand([n, 1, 1, 1], generator=g) < 0.5).float()
    x = pick * blurred + (1 - pick) * x
    lo = -1 + 0.6 * torch.rand([n, 1, 1, 1], generator=g)  # background grey level
    hi = 1 - 0.4 * torch.rand([n, 1, 1, 1], generator=g)  # shape grey level
    x = lo + (x + 1) / 2 * (hi - lo)
    x = x + 0.1 * torch.rand([n, 1, 1, 1], generator=g) * torch.randn(x.shape, generator=g)
    if torch.rand([], generator=g) < 0.5:
        x = x.flip(3)
    if torch.rand([], generator=g) < 0.5:
        x = x.transpose(2, 3)
    return x


def train_shape_classifier(
    images: np.ndarray, labels: np.ndarray, *, epochs: int = 8, seed: int = 0, holdout: float = 0.2
) -> tuple[ShapeNet, float]:
    """images [N, H, W] uint8 reals, labels [N] in {0, 1} -> (classifier, accuracy on the held-out reals)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images).float().div(127.5).sub(1).unsqueeze(1)  # [N, 1, H, W]
    y = torch.from_numpy(labels).long()
    order = torch.randperm(len(x), generator=g)
    n_test = int(len(x) * holdout)
    test, train = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    net = ShapeNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for idx in train[torch.randperm(len(train), generator=g)].split(64):
            loss = F.cross_entropy(net(_augment(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(x[test]).argmax(1) == y[test]).float().mean())
    return net, acc


@torch.no_grad()
def predict(net: ShapeNet, images: np.ndarray) -> np.ndarray:
    """images [N, H, W] float in [-1, 1] -> predicted class [N]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1)
    return net(x).argmax(1).numpy()
