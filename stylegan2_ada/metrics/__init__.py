"""GAN quality metrics, offline: FID, KID and improved precision/recall with a pluggable feature extractor.

* :mod:`.statistics`: the metrics computed from feature vectors.
* :mod:`.extractors`: feature extractors loaded from local files (TorchScript, torch.export, torchvision
  weights, plugins through the ``feature_extractors`` hook).
* :mod:`.features`: features of real images (cached) and of generated images.
* :mod:`.runner`: :func:`compute_metrics` (upstream's metric names) and :func:`append_metric_jsonl`.
* :mod:`.curves`: metric and loss curves of training runs to PNG.

Nothing is downloaded: every network is a local file. See ``docs/metrics.md``.
"""

from stylegan2_ada.metrics.extractors import DetectorError, FeatureExtractor, load_extractor
from stylegan2_ada.metrics.runner import (
    METRICS,
    MetricError,
    append_metric_jsonl,
    compute_metrics,
    parse_metric_list,
)

__all__ = [
    "METRICS",
    "DetectorError",
    "FeatureExtractor",
    "MetricError",
    "append_metric_jsonl",
    "compute_metrics",
    "load_extractor",
    "parse_metric_list",
]
