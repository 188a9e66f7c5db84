"""The metric statistics on feature vectors: FID, KID and precision/recall against closed forms, toy point
sets, scikit-learn's nearest neighbours and torchmetrics' FID/KID on the same features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from stylegan2_ada.metrics import statistics as st

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _exact_gaussian_sample(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> torch.Tensor:
    """n points whose sample mean and unbiased sample covariance are exactly ``mean`` and ``cov``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, len(mean)))
    x -= x.mean(0)
    white = np.linalg.cholesky(np.cov(x, rowvar=False))
    x = x @ np.linalg.inv(white).T  # sample covariance now exactly the identity
    return torch.from_numpy(x @ np.linalg.cholesky(cov).T + mean)


def test_fid_of_a_set_against_itself_is_zero() -> None:
    x = torch.randn(300, 24)
    assert abs(st.fid_from_features(x, x)) < 1e-6
    assert abs(st.fid_from_features(x, x.flip(0))) < 1e-6  # order does not matter


def test_fid_of_fewer_samples_than_dimensions_is_finite_and_zero_on_itself() -> None:
    x = torch.randn(20, 64)  # singular covariance: sqrt of the ~0 eigenvalues costs some precision
    assert abs(st.fid_from_features(x, x)) < 1e-4
    assert np.isfinite(st.fid_from_features(x, torch.randn(20, 64) + 0.5))


def test_fid_matches_the_closed_form_for_diagonal_gaussians() -> None:
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    real = _exact_gaussian_sample(500, mu1, np.diag(var1), seed=1)
    fake = _exact_gaussian_sample(400, mu2, np.diag(var2), seed=2)
    closed = np.square(mu1 - mu2).sum() + np.square(np.sqrt(var1) - np.sqrt(var2)).sum()
    assert st.fid_from_features(real, fake) == pytest.approx(closed, rel=1e-9)


def test_fid_matches_the_closed_form_for_non_commuting_2d_covariances() -> None:
    # For 2x2 PSD A, B: tr sqrt(AB) = sqrt(tr(AB) + 2 sqrt(det A det B)).
    s1 = np.array([[2.0, 0.9], [0.9, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 3.0]])
    mu1, mu2 = np.array([0.0, 0.0]), np.array([1.0, -2.0])
    real = _exact_gaussian_sample(600, mu1, s1, seed=3)
    fake = _exact_gaussian_sample(600, mu2, s2, seed=4)
    trace_sqrt = np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    closed = np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert st.fid_from_features(real, fake) == pytest.approx(closed, rel=1e-9)


class _Identity(torch.nn.Module):
    """A torchmetrics 'feature extractor' that passes given features through."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_fid_equals_torchmetrics_on_the_same_features() -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance

    gen = torch.Generator().manual_seed(5)
    real = torch.randn(400, 32, generator=gen, dtype=torch.float64)
    fake = torch.randn(300, 32, generator=gen, dtype=torch.float64) * 1.3 + 0.2
    fake[:, :4] += torch.randn(300, 4, generator=gen, dtype=torch.float64)  # a correlated part
    reference = FrechetInceptionDistance(feature=_Identity(32))
    reference.update(real, real=True)
    reference.update(fake, real=False)
    expected = float(reference.compute())
    assert st.fid_from_features(real, fake) == pytest.approx(expected, rel=1e-3)
    assert st.fid_from_features(real.float(), fake.float()) == pytest.approx(expected, rel=1e-3)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_equals_torchmetrics_on_the_same_features() -> None:
    from torchmetrics.image.kid import KernelInceptionDistance

    gen = torch.Generator().manual_seed(6)
    real = torch.randn(250, 16, generator=gen, dtype=torch.float64)
    fake = torch.randn(250, 16, generator=gen, dtype=torch.float64) * 1.2 + 0.3
    # One subset holding every row: both estimators see the same sets, whatever they draw.
    reference = KernelInceptionDistance(feature=_Identity(16), subsets=1, subset_size=250)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    expected = float(reference.compute()[0])
    ours = st.kernel_inception_distance(real.float(), fake.float(), num_subsets=1, max_subset_size=1000)
    assert ours == pytest.approx(expected, rel=1e-3)


def test_kid_averages_subsets_like_torchmetrics_poly_mmd() -> None:
    from torchmetrics.image.kid import poly_mmd

    gen = torch.Generator().manual_seed(7)
    real = torch.randn(60, 8, generator=gen, dtype=torch.float64)
    fake = torch.randn(50, 8, generator=gen, dtype=torch.float64) + 0.5
    rng = np.random.default_rng(3)  # the draws kernel_inception_distance makes with seed=3
    draws = []
    for _ in range(5):
        f_idx = rng.choice(50, 20, replace=False)
        r_idx = rng.choice(60, 20, replace=False)
        draws.append(float(poly_mmd(real[r_idx], fake[f_idx])))
    ours = st.kernel_inception_distance(real.float(), fake.float(), num_subsets=5, max_subset_size=20, seed=3)
    assert ours == pytest.approx(np.mean(draws), rel=1e-3)


def test_kid_is_unbiased_on_equal_distributions() -> None:
    gen = torch.Generator().manual_seed(8)
    values = [
        st.kernel_inception_distance(
            torch.randn(40, 6, generator=gen), torch.randn(40, 6, generator=gen), num_subsets=1
        )
        for _ in range(300)
    ]
    mean, se = np.mean(values), np.std(values) / np.sqrt(len(values))
    assert abs(mean) < 3 * se, (mean, se)
    # A real difference is clearly positive at the same sizes.
    shifted = [
        st.kernel_inception_distance(
            torch.randn(40, 6, generator=gen), torch.randn(40, 6, generator=gen) + 0.7, num_subsets=1
        )
        for _ in range(20)
    ]
    assert np.mean(shifted) > 10 * se


def test_kid_subsets_are_seeded() -> None:
    real, fake = torch.randn(120, 4), torch.randn(100, 4) + 0.1
    a = st.kernel_inception_distance(real, fake, num_subsets=10, max_subset_size=30, seed=1)
    assert a == st.kernel_inception_distance(real, fake, num_subsets=10, max_subset_size=30, seed=1)
    assert a != st.kernel_inception_distance(real, fake, num_subsets=10, max_subset_size=30, seed=2)


def test_knn_radii_equal_scikit_learn_in_small_blocks() -> None:
    x = torch.randn(97, 5)
    expected = NearestNeighbors(n_neighbors=4).fit(x.numpy()).kneighbors(x.numpy())[0][:, 3]
    radii = st.knn_radii(x, 3, row_batch=7, col_batch=11)
    np.testing.assert_allclose(radii.numpy(), expected, rtol=1e-4, atol=1e-5)


def _brute_force_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x: np.ndarray) -> np.ndarray:
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]

    d = np.sqrt(((real[:, None] - fake[None]) ** 2).sum(-1))  # [R, G]
    precision = (d <= radii(real)[:, None]).any(0).mean()
    recall = (d <= radii(fake)[None, :]).any(1).mean()
    return float(precision), float(recall)


def test_precision_recall_equal_a_brute_force_reference_whatever_the_blocks() -> None:
    real = torch.randn(150, 3, dtype=torch.float64)
    fake = torch.randn(130, 3, dtype=torch.float64) * 0.8 + 0.4
    expected = _brute_force_precision_recall(real.numpy(), fake.numpy(), 3)
    for rows, cols in ((1024, 8192), (16, 23)):
        got = st.precision_recall(real.float(), fake.float(), k=3, row_batch=rows, col_batch=cols)
        assert got == pytest.approx(expected, abs=1.5 / 130)  # at most one borderline point may flip


def test_precision_recall_on_toy_point_sets() -> None:
    gen = torch.Generator().manual_seed(9)
    real = torch.randn(600, 2, generator=gen)
    same = st.precision_recall(real, torch.randn(600, 2, generator=gen))
    shifted = st.precision_recall(real, torch.randn(600, 2, generator=gen) + torch.tensor([6.0, 0.0]))
    collapsed = st.precision_recall(real, torch.randn(600, 2, generator=gen) * 0.05)
    assert same[0] > 0.85 and same[1] > 0.85, same
    assert shifted[0] < 0.1, shifted  # a shifted set loses precision
    assert collapsed[0] > 0.95 and collapsed[1] < 0.2, collapsed  # a collapsed set loses recall


def test_too_few_samples_give_a_clear_error() -> None:
    with pytest.raises(st.MetricInputError, match="at least 2"):
        st.fid_from_features(torch.randn(1, 4), torch.randn(5, 4))
    with pytest.raises(st.MetricInputError, match="differ in size"):
        st.kernel_inception_distance(torch.randn(5, 4), torch.randn(5, 3))
    with pytest.raises(st.MetricInputError, match="at least 4"):
        st.precision_recall(torch.randn(3, 2), torch.randn(10, 2), k=3)
