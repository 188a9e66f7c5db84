"""The statistics of the GAN quality metrics, computed from feature vectors (no images, no networks).

All functions take ``real`` and ``fake`` features as float tensors ``[N, F]`` (any device; the work runs
there) and return plain Python floats.

FID (Fréchet distance between Gaussians fitted to the two sets)
    ``||mu_r - mu_f||^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2))`` with the sample means ``mu`` and the
    unbiased sample covariances ``S`` (normalised by ``N - 1``), in float64 on the features' device. The
    trace of the matrix square root is computed as ``sum(sqrt(eig(S_r^(1/2) S_f S_r^(1/2))))`` with
    ``torch.linalg.eigh`` (LAPACK on CPU, cuSOLVER on CUDA): that matrix is symmetric positive
    semi-definite and similar to ``S_r S_f``, so this equals the usual ``tr(sqrtm(S_r S_f))`` while staying
    real and stable when the covariances are singular (fewer images than feature dimensions).

KID (kernel inception distance)
    The unbiased estimate of the squared maximum mean discrepancy with the cubic polynomial kernel
    ``k(x, y) = (x . y / F + 1)^3``, averaged over ``num_subsets`` random subsets (default 100) of
    ``m = min(N_real, N_fake, max_subset_size)`` rows of each set (default at most 1000), drawn without
    replacement with a seeded generator::

        MMD_u^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
                  - 2 sum_{i, j} k(x_i, y_j) / m^2

    Its expectation is exactly 0 when both sets come from the same distribution (so it can be negative).
    Dot products are float32 at full precision (TF32 off), kernels and sums float64.

Improved precision and recall (k-nearest-neighbour manifolds, default k = 3)
    Each set's manifold is the union of balls around its points whose radius is the distance to the point's
    k-th nearest neighbour in the same set (the point itself not counted). Precision is the fraction of
    fake points inside the real manifold; recall the fraction of real points inside the fake manifold.
    Euclidean distances are computed in blocks of ``row_batch`` x ``col_batch`` pairs, so memory stays
    bounded for any set size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "MetricInputError",
    "feature_moments",
    "frechet_distance",
    "fid_from_features",
    "kernel_inception_distance",
    "knn_radii",
    "precision_recall",
]

# Blocks of the pairwise-distance computations: 1024 x 8192 float32 = 32 MiB per block.
DEFAULT_ROW_BATCH = 1024
DEFAULT_COL_BATCH = 8192


class MetricInputError(ValueError):
    """The feature sets cannot give the metric (too few rows, mismatched feature sizes, ...)."""


@contextlib.contextmanager
def _full_precision_matmul() -> Iterator[None]:
    """float32 matrix products without TF32 (a run may have enabled it globally for training)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _check_pair(real: torch.Tensor, fake: torch.Tensor, what: str, min_rows: int) -> None:
    for name, t in (("real", real), ("fake", fake)):
        if t.ndim != 2:
            raise MetricInputError(f"{what}: {name} features must be [N, F], got shape {tuple(t.shape)}")
        if t.shape[0] < min_rows:
            raise MetricInputError(f"{what} needs at least {min_rows} {name} samples, got {t.shape[0]}")
    if real.shape[1] != fake.shape[1]:
        raise MetricInputError(
            f"{what}: real and fake features differ in size ({real.shape[1]} vs {fake.shape[1]})"
        )


@torch.no_grad()
def feature_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, F]`` -> (mean ``[F]``, unbiased covariance ``[F, F]``), float64 on the features' device."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise MetricInputError(
            f"FID needs at least 2 samples of [N, F] features, got {tuple(features.shape)}"
        )
    x = features.to(torch.float64)
    mu = x.mean(dim=0)  # [F]
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)  # [F, F]
    return mu, sigma


def _float64(x: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(x).to(device, torch.float64)


@torch.no_grad()
def frechet_distance(
    mu1: torch.Tensor | np.ndarray,
    sigma1: torch.Tensor | np.ndarray,
    mu2: torch.Tensor | np.ndarray,
    sigma2: torch.Tensor | np.ndarray,
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (tensors or arrays; computed in float64 on
    ``mu1``'s device); see the module docstring."""
    device = mu1.device if isinstance(mu1, torch.Tensor) else torch.device("cpu")
    mu1, mu2 = _float64(mu1, device), _float64(mu2, device)
    s1, s2 = _float64(sigma1, device), _float64(sigma2, device)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise MetricInputError(
            f"mean/covariance shapes do not match: {tuple(mu1.shape)}, {tuple(s1.shape)}, "
            f"{tuple(mu2.shape)}, {tuple(s2.shape)}"
        )
    evals, evecs = torch.linalg.eigh(s1)
    root1 = (evecs * evals.clamp(min=0).sqrt()) @ evecs.T  # S1^(1/2), symmetric
    middle = root1 @ s2 @ root1
    middle = (middle + middle.T) / 2  # exactly symmetric for eigvalsh
    trace_sqrt = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    mean_term = (mu1 - mu2).square().sum()
    return float(mean_term + s1.trace() + s2.trace() - 2 * trace_sqrt)


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets ``[N, F]`` (at least 2 rows each)."""
    _check_pair(real, fake, "FID", 2)
    return frechet_distance(*feature_moments(real), *feature_moments(fake))


@torch.no_grad()
def kernel_inception_distance(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """KID: mean unbiased polynomial-kernel MMD^2 over random subsets (see the module docstring)."""
    _check_pair(real, fake, "KID", 2)
    if num_subsets < 1 or max_subset_size < 2:
        raise MetricInputError(
            f"KID needs num_subsets >= 1 and max_subset_size >= 2, got {num_subsets}, {max_subset_size}"
        )
    n_real, n_fake, dim = real.shape[0], fake.shape[0], real.shape[1]
    m = min(n_real, n_fake, max_subset_size)
    rng = np.random.default_rng(seed)
    device = fake.device
    real = real.to(device, torch.float32)
    fake = fake.to(device, torch.float32)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # [m, m] float64
        return (torch.mm(a, b.T).to(torch.float64) / dim + 1) ** 3

    total = 0.0
    with _full_precision_matmul():
        for _ in range(num_subsets):
            x = fake[torch.from_numpy(rng.choice(n_fake, m, replace=False)).to(device)]  # [m, F]
            y = real[torch.from_numpy(rng.choice(n_real, m, replace=False)).to(device)]  # [m, F]
            kxx, kyy = kernel(x, x), kernel(y, y)
            within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            total += float(within - 2 * kernel(x, y).sum() / (m * m))
    return total / num_subsets


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[A, F]``, ``[B, F]`` -> squared Euclidean distances ``[A, B]`` (float32, clamped at 0)."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2 * torch.mm(a, b.T)
    return d.clamp_(min=0)


@torch.no_grad()
def knn_radii(
    features: torch.Tensor,
    k: int = 3,
    *,
    row_batch: int = DEFAULT_ROW_BATCH,
    col_batch: int = DEFAULT_COL_BATCH,
) -> torch.Tensor:
    """Distance from each row of ``[N, F]`` to its k-th nearest other row: float32 ``[N]``.

    A row's zero distance to itself is the smallest of its ``k + 1`` smallest distances, so the radius is
    the ``(k + 1)``-th smallest (an exact duplicate of a row therefore counts as a neighbour at 0).
    """
    n = features.shape[0]
    if n <= k:
        raise MetricInputError(f"k-NN radii with k={k} need more than {k} samples, got {n}")
    x = features.to(torch.float32)
    radii = torch.empty(n, dtype=torch.float32, device=x.device)
    with _full_precision_matmul():
        for r0 in range(0, n, row_batch):
            rows = x[r0 : r0 + row_batch]
            best = torch.full((rows.shape[0], 0), float("inf"), device=x.device)  # running k+1 smallest
            for c0 in range(0, n, col_batch):
                d = _squared_distances(rows, x[c0 : c0 + col_batch])
                merged = torch.cat([best, d], dim=1)
                best = torch.topk(merged, min(k + 1, merged.shape[1]), dim=1, largest=False).values
            radii[r0 : r0 + rows.shape[0]] = best[:, k].sqrt()
    return radii


@torch.no_grad()
def precision_recall(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    k: int = 3,
    row_batch: int = DEFAULT_ROW_BATCH,
    col_batch: int = DEFAULT_COL_BATCH,
) -> tuple[float, float]:
    """Improved precision and recall (k-NN manifolds) of ``fake`` with respect to ``real``."""
    _check_pair(real, fake, "precision/recall", k + 1)
    device = fake.device
    real = real.to(device, torch.float32)
    fake = fake.to(device, torch.float32)
    r2_real = knn_radii(real, k, row_batch=row_batch, col_batch=col_batch).square()  # [R]
    r2_fake = knn_radii(fake, k, row_batch=row_batch, col_batch=col_batch).square()  # [G]
    fake_covered = torch.zeros(fake.shape[0], dtype=torch.bool, device=device)  # inside the real manifold
    real_covered = torch.zeros(real.shape[0], dtype=torch.bool, device=device)  # inside the fake manifold
    with _full_precision_matmul():
        for r0 in range(0, real.shape[0], row_batch):
            rows = real[r0 : r0 + row_batch]
            radii_rows = r2_real[r0 : r0 + row_batch, None]  # [B, 1]
            for c0 in range(0, fake.shape[0], col_batch):
                d = _squared_distances(rows, fake[c0 : c0 + col_batch])  # [B, C]
                fake_covered[c0 : c0 + d.shape[1]] |= (d <= radii_rows).any(dim=0)
                real_covered[r0 : r0 + d.shape[0]] |= (d <= r2_fake[None, c0 : c0 + d.shape[1]]).any(dim=1)
    return float(fake_covered.double().mean()), float(real_covered.double().mean())
