#!/usr/bin/env python
"""Compute GAN quality metrics of a generator snapshot against a dataset, offline (upstream-style command).

Examples:

    python calc_metrics.py --network run/network-snapshot-000200.safetensors --data data.zip \\
        --metrics fid50k_full,kid50k_full,pr50k3_full --detector densenet121-weights.pt --num 5000
    python calc_metrics.py --network snapshot.pkl --data images/ --metrics fid50k_full \\
        --detector inception-2015-12-05.pt --class 1

Writes one JSON line per metric to ``metric-<name>.jsonl`` beside the network (or in ``--outdir``), as
upstream does. The network is read safely (our checkpoints, or upstream ``.pkl`` files without running
them); the detector is a local file (TorchScript, torch.export, torchvision weights, or a kind a
``--plugin`` adds): nothing is downloaded. Real-image features are cached in ``--cache-dir``. See
``docs/metrics.md``.
"""

from __future__ import annotations

import os

import click

from stylegan2_ada import devices

DEFAULT_CACHE = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "stylegan2_ada",
    "metrics",
)


def _load_generator(network: str, device):
    """(G, kimg or None) from a native checkpoint or an upstream .pkl; click errors for bad files."""
    from stylegan2_ada import checkpoint, legacy_pickle
    from stylegan2_ada.generation import GenerationError, select_generator

    try:
        loaded = checkpoint.load_checkpoint(network, device)
        _, G = select_generator(loaded.networks)
    except FileNotFoundError:
        raise click.BadParameter(f"network file not found: {network}", param_hint="'--network'") from None
    except IsADirectoryError:
        raise click.BadParameter(
            f"{network}: is a folder, not a network file", param_hint="'--network'"
        ) from None
    except (checkpoint.CheckpointError, legacy_pickle.LegacyPickleError, GenerationError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--network'") from None
    except OSError as exc:
        raise click.BadParameter(
            f"{network}: cannot read: {exc.strerror or exc}", param_hint="'--network'"
        ) from None
    state = loaded.metadata.get("training_state") or {}
    kimg = state.get("cur_nimg") / 1000 if isinstance(state.get("cur_nimg"), (int, float)) else None
    return G, kimg


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--network",
    required=True,
    metavar="PATH",
    help="Generator: our .safetensors snapshot or an upstream .pkl.",
)
@click.option(
    "--data", required=True, metavar="PATH", help="Dataset: image folder or zip (the training data)."
)
@click.option(
    "--metrics",
    default="fid50k_full",
    show_default=True,
    metavar="LIST",
    help="Comma-separated metric names.",
)
@click.option(
    "--detector",
    required=True,
    metavar="PATH",
    help="Feature extractor file (TorchScript, .pt2, torchvision weights).",
)
@click.option(
    "--detector-arch",
    default=None,
    metavar="NAME",
    help="torchvision architecture of a state-dict detector [default: from its keys].",
)
@click.option(
    "--num",
    "num_gen",
    type=click.IntRange(min=2),
    default=None,
    metavar="N",
    help="Generated images per metric [default: the metric's, 50k].",
)
@click.option(
    "--class",
    "class_idx",
    type=click.IntRange(min=0),
    default=None,
    metavar="K",
    help="Evaluate this class only.",
)
@click.option("--mirror", is_flag=True, help="Include x-flipped reals (as training with --mirror).")
@click.option(
    "--outdir",
    default=None,
    metavar="DIR",
    help="Where metric-<name>.jsonl goes [default: beside the network].",
)
@click.option(
    "--cache-dir", default=DEFAULT_CACHE, show_default=True, metavar="DIR", help="Real-feature cache."
)
@click.option("--no-cache", is_flag=True, help="Neither read nor write the real-feature cache.")
@click.option(
    "--device", type=click.Choice(devices.DEVICES), default=None, help="Device [default: cuda if available]."
)
@click.option(
    "--batch",
    "batch_size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    metavar="N",
    help="Images per batch.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Image-decoding processes [default: CPUs, at most 3].",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Latents, noise and metric subsets.",
)
@click.option(
    "--plugin", "plugins", multiple=True, metavar="NAME", help="Plugin that adds detector kinds (repeatable)."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def main(
    network: str,
    data: str,
    metrics: str,
    detector: str,
    detector_arch: str | None,
    num_gen: int | None,
    class_idx: int | None,
    mirror: bool,
    outdir: str | None,
    cache_dir: str,
    no_cache: bool,
    device: str | None,
    batch_size: int,
    workers: int | None,
    seed: int,
    plugins: tuple[str, ...],
    quiet: bool,
) -> None:
    """Compute METRICS of the generator in NETWORK against DATA; append them to metric-<name>.jsonl."""
    from stylegan2_ada.dataset import DatasetError, open_image_dataset
    from stylegan2_ada.metrics import (
        DetectorError,
        MetricError,
        append_metric_jsonl,
        compute_metrics,
        load_extractor,
        parse_metric_list,
    )
    from stylegan2_ada.plugins import create_plugin_manager

    def log(message: str) -> None:
        click.echo(message, err=True)

    try:
        names = parse_metric_list(metrics)
    except MetricError as exc:
        raise click.BadParameter(str(exc), param_hint="'--metrics'") from None
    if not names:
        raise click.BadParameter("no metrics given", param_hint="'--metrics'")
    try:
        dev = devices.resolve_device(device)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--device'") from None
    network = os.path.abspath(network)
    G, kimg = _load_generator(network, dev)
    try:
        dataset = open_image_dataset(data, use_labels=G.c_dim > 0, xflip=mirror)
    except DatasetError as exc:
        raise click.BadParameter(str(exc), param_hint="'--data'") from None
    pm = create_plugin_manager(list(plugins)) if plugins else None
    try:
        extractor = load_extractor(detector, device=dev, arch=detector_arch, pm=pm, log=log)
    except DetectorError as exc:
        raise click.BadParameter(str(exc), param_hint="'--detector'") from None
    log(
        f"Detector: {extractor.name} ({extractor.describe().get('kind', 'plugin')}), {extractor.feature_dim} features"
    )
    target = outdir or os.path.dirname(network)
    try:
        results = compute_metrics(
            names,
            G,
            dataset,
            extractor,
            num_gen=num_gen,
            class_idx=class_idx,
            device=dev,
            cache_dir=None if no_cache else cache_dir,
            batch_size=batch_size,
            workers=devices.default_workers(cap=3) if workers is None else workers,
            seed=seed,
            progress=not quiet,
            log=log,
        )
    except (MetricError, DetectorError, DatasetError) as exc:
        raise click.ClickException(str(exc)) from None
    for name, result in results.items():
        try:
            path = append_metric_jsonl(target, name, result, snapshot_pkl=network, kimg=kimg)
        except OSError as exc:
            raise click.ClickException(f"cannot write metric-{name}.jsonl in {target}: {exc}") from None
        values = ", ".join(f"{k} {v:.6g}" for k, v in result["results"].items())
        click.echo(f"{name}: {values} ({result['total_time_str']}) -> {path}")


if __name__ == "__main__":
    main()
