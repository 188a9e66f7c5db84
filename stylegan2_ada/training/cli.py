"""The ``train.py`` command line: upstream's options, ``--device``, ``--plugin`` and the plugins' options.

Plugins add options, so the command is built in two steps: the raw arguments are scanned for
``--plugin NAME`` / ``--plugin=NAME`` first, the plugin manager is created, and the click command is
built with the core options plus ``collect_plugin_options(pm)``. Every invalid value or combination is
reported as a usage error (exit status 2) naming the option.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from stylegan2_ada.training.options import (
    AUG_MODES,
    AUGPIPES,
    CFG_NAMES,
    CLI_DEFAULTS,
    DEVICES,
    DatasetInfo,
    OptionsError,
    ResumeInfo,
    TrainingOptions,
    check_cli,
    resolve_device,
    resolve_options,
)


def _bool_opt(*decls: str, help: str) -> click.Option:
    """A boolean option usable both as ``--flag`` and upstream's ``--flag=1`` / ``--flag=0``."""
    return click.Option(
        list(decls), type=bool, is_flag=False, flag_value=True, default=False, show_default=True, help=help
    )


def core_options() -> list[click.Option]:
    """The core options of ``train.py`` (names match :data:`.options.CLI_DEFAULTS`)."""
    Opt = click.Option
    return [
        Opt(["--outdir"], required=True, metavar="DIR", help="Where to make the run folder NNNNN-<desc>."),
        Opt(
            ["--data"],
            required=True,
            metavar="PATH",
            help="Training data: an image folder or zip (or what a plugin reads).",
        ),
        _bool_opt("--cond", help="Train a conditional model (labels from dataset.json)."),
        Opt(
            ["--gpus"],
            type=int,
            default=1,
            show_default=True,
            help="Number of processes (GPUs, or CPU processes with --device cpu); >1 needs torchrun.",
        ),
        Opt(["--batch"], type=int, help="Total batch size [default: preset]."),
        Opt(
            ["--batch-gpu"],
            type=int,
            help="Batch per process per step; gradients accumulate over "
            "batch/(batch-gpu*gpus) rounds [default: preset].",
        ),
        Opt(["--kimg"], type=float, help="Training length in thousands of real images [default: preset]."),
        Opt(
            ["--snap"],
            type=int,
            default=CLI_DEFAULTS["snap"],
            show_default=True,
            help="Image grid and snapshot interval, in ticks.",
        ),
        Opt(
            ["--tick"],
            type=float,
            default=CLI_DEFAULTS["tick"],
            show_default=True,
            help="Progress interval, in kimg (may be below 1 for tiny runs).",
        ),
        Opt(
            ["--cfg"],
            type=click.Choice(CFG_NAMES),
            default="auto",
            show_default=True,
            help="Base configuration.",
        ),
        Opt(["--gamma"], type=float, help="R1 regularisation weight [default: preset]."),
        Opt(["--cbase"], type=int, help="Capacity multiplier (channel_base) [default: preset]."),
        Opt(["--cmax"], type=int, help="Maximum feature maps [default: 512]."),
        Opt(["--map-depth"], type=int, help="Mapping network depth [default: preset]."),
        Opt(["--glr"], type=float, help="G learning rate [default: preset]."),
        Opt(["--dlr"], type=float, help="D learning rate [default: preset]."),
        Opt(["--mbstd-group"], type=int, help="Minibatch std group size [default: preset]."),
        Opt(
            ["--aug"],
            type=click.Choice(AUG_MODES),
            default="ada",
            show_default=True,
            help="Augmentation mode.",
        ),
        Opt(["--p"], type=float, help="Augmentation probability for --aug=fixed."),
        Opt(["--target"], type=float, help="ADA target value for --aug=ada [default: 0.6]."),
        Opt(
            ["--augpipe"],
            type=click.Choice(AUGPIPES),
            default="bgc",
            show_default=True,
            help="Augmentation pipeline.",
        ),
        Opt(
            ["--ada-kimg"],
            type=float,
            help="ADA speed: kimg for p to move by 1 [default: 500; 100 when "
            "resuming from an upstream .pkl].",
        ),
        _bool_opt("--mirror", help="Enable dataset x-flips."),
        Opt(["--subset"], type=int, help="Train with only N images [default: all]."),
        Opt(
            ["--resume"],
            metavar="PATH|latest",
            help="Resume from a snapshot, an upstream .pkl, or 'latest' (newest snapshot under --outdir).",
        ),
        Opt(
            ["--freezed"],
            type=int,
            default=0,
            show_default=True,
            help="Freeze-D: number of D layers to freeze.",
        ),
        _bool_opt("--fp32", help="Disable mixed precision (fp16 only ever runs on CUDA)."),
        Opt(
            ["--metrics"],
            default="none",
            show_default=True,
            help="Quality metrics: only `none` (not implemented yet).",
        ),
        Opt(["--seed"], type=int, default=0, show_default=True, help="Random seed."),
        Opt(
            ["--workers"],
            type=int,
            default=None,
            help="DataLoader worker processes [default: 3, at most the CPUs this process may use].",
        ),
        Opt(
            ["--device"], type=click.Choice(DEVICES), help="Device [default: cuda when available, else cpu]."
        ),
        Opt(
            ["--plugin"],
            multiple=True,
            metavar="NAME",
            help="Enable a plugin (repeatable): built-in name, entry point name or dotted module path.",
        ),
        Opt(["--desc"], help="String appended to the run folder name."),
        Opt(["-n", "--dry-run"], is_flag=True, help="Print the resolved options as JSON and exit."),
    ]


def dataset_info(ds: Any) -> DatasetInfo:
    """The facts option resolution needs, from an ImageDataset-like object."""
    res = int(ds.resolution)
    shape = getattr(ds, "image_shape", None)
    if shape is not None and (int(shape[1]) != res or int(shape[2]) != res):
        raise OptionsError(
            f"images of {getattr(ds, 'name', '?')} are {shape[2]}x{shape[1]}; square images are needed"
        )
    return DatasetInfo(
        name=str(getattr(ds, "name", "dataset")),
        resolution=res,
        num_channels=int(ds.num_channels),
        label_dim=int(ds.label_dim),
        has_labels=bool(ds.has_labels),
        size=len(ds),
    )


def resume_info(ckpt: Any) -> ResumeInfo:
    """Resolution, channels, c_dim and kimg of a resume checkpoint (from its G or G_ema)."""
    from stylegan2_ada.training.snapshots import ResumeError, is_training_snapshot

    G = ckpt.networks.get("G_ema") or ckpt.networks.get("G")
    if G is None:
        raise ResumeError(f"--resume {ckpt.path}: the file holds no generator (G or G_ema)")
    cur_nimg = int(ckpt.metadata["training_state"]["cur_nimg"]) if is_training_snapshot(ckpt) else 0
    return ResumeInfo(
        path=ckpt.path,
        format="snapshot" if is_training_snapshot(ckpt) else "weights",
        resolution=int(G.img_resolution),
        img_channels=int(G.img_channels),
        c_dim=int(G.c_dim),
        cur_nimg=cur_nimg,
        z_dim=int(G.z_dim),
        w_dim=int(G.w_dim),
    )


def prepare(raw: dict[str, Any], pm: Any, plugin_names: Sequence[str]) -> tuple[TrainingOptions, Any, Any]:
    """Validate and resolve the options; returns (options, opened dataset, resume checkpoint or None).

    Raises ``click.UsageError`` for anything invalid.
    """
    from stylegan2_ada.dataset import DatasetError
    from stylegan2_ada.demo_data import DEMO_NAME, make_demo_dataset
    from stylegan2_ada.training.data import open_training_dataset
    from stylegan2_ada.training.distributed import dist_info_from_env
    from stylegan2_ada.training.snapshots import ResumeError, load_resume_checkpoint

    core = {k: v for k, v in raw.items() if k in CLI_DEFAULTS}
    plugin_opts = {k: v for k, v in raw.items() if k not in CLI_DEFAULTS}
    try:
        check_cli(core)
        device = resolve_device(core.get("device"))
        if pm is not None:
            pm.hook.validate_options(options=dict(raw))
        if core["data"] == DEMO_NAME and not os.path.exists(DEMO_NAME):
            # The embedded default data set (stylegan2_ada/demo_data.py), generated once under --outdir.
            core["data"] = raw["data"] = str(
                make_demo_dataset(os.path.join(core["outdir"], ".cache", DEMO_NAME))
            )
        ckpt = load_resume_checkpoint(core["resume"], core["outdir"]) if core.get("resume") else None
        rinfo = resume_info(ckpt) if ckpt is not None else None
        use_labels = bool(core.get("cond"))
        try:
            ds = open_training_dataset(
                core["data"],
                cond=use_labels,
                mirror=bool(core.get("mirror")),
                subset=core.get("subset"),
                seed=int(core.get("seed") or 0),
                outdir=core["outdir"],
                pm=pm,
                options=raw,
            )
        except DatasetError as exc:
            if use_labels and "dataset.json" in str(exc):
                raise OptionsError(f"--cond needs labels: {exc}") from exc
            raise
        opts = resolve_options(
            core,
            dataset_info(ds),
            resume=rinfo,
            world_size=dist_info_from_env().world_size,
            device=device,
            plugin_options=plugin_opts,
        )
        opts.plugins = list(plugin_names)
    except (OptionsError, ResumeError, DatasetError) as exc:
        raise click.UsageError(str(exc)) from exc
    return opts, ds, ckpt


def build_command(pm: Any, plugin_names: Sequence[str]) -> click.Command:
    """The ``train.py`` click command for the plugins in ``pm`` (their options included)."""
    from stylegan2_ada.plugins import collect_plugin_options

    params: list[click.Parameter] = core_options()
    if pm is not None:
        params += collect_plugin_options(pm, reserved=params)

    def callback(**raw: Any) -> Any:
        opts, ds, ckpt = prepare(raw, pm, plugin_names)
        if opts.dry_run:
            click.echo(json.dumps(opts.to_dict(), indent=2))
            return opts
        from stylegan2_ada.training.loop import training_loop

        return training_loop(opts, pm=pm, dataset=ds, resume_ckpt=ckpt)

    return click.Command(
        "train.py",
        params=params,
        callback=callback,
        help="Train a (conditional) StyleGAN2-ADA. See docs/training.md.",
    )


def main(argv: Sequence[str] | None = None, *, standalone_mode: bool = True) -> Any:
    """Entry point of ``train.py``. With ``standalone_mode=False`` returns the TrainingResult (or the
    options for ``--dry-run``) and raises ``click.UsageError`` instead of exiting."""
    from stylegan2_ada.plugins import PluginError, create_plugin_manager, plugin_names_from_args

    args = list(sys.argv[1:] if argv is None else argv)
    names = plugin_names_from_args(args)
    try:
        pm = create_plugin_manager(names)
    except PluginError as exc:
        if not standalone_mode:
            raise
        exc.show()
        sys.exit(exc.exit_code)
    cmd = build_command(pm, names)
    return cmd.main(args=args, prog_name="train.py", standalone_mode=standalone_mode)
