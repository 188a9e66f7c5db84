"""The ``train.py`` command line: upstream's options, ``--device``, ``--plugin`` and the plugins' options.

Plugins add options, so the command is built in two steps: the raw arguments are scanned for
``--plugin NAME`` / ``--plugin=NAME`` first, the plugin manager is created, and the click command is
built with the core options (one per entry of :data:`.options.OPTION_SPECS`) plus
``collect_plugin_options(pm)``. Every invalid value or combination is reported as a usage error (exit
status 2) naming the option, before anything is written; expected failures later on (file-system
errors, unreadable inputs, a run stopped by bad images) as one ``Error: ...`` line (exit status 1).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click

from stylegan2_ada.training.options import (
    CLI_DEFAULTS,
    OPTION_SPECS,
    DatasetInfo,
    OptionsError,
    OptionSpec,
    ResumeInfo,
    TrainingOptions,
    apply_adjustment,
    check_cli,
    check_outdir,
    describe_adjustments,
    resolve_device,
    resolve_options,
    with_cli_defaults,
)


def click_option(spec: OptionSpec) -> click.Option:
    """The click option of one :class:`OptionSpec` (booleans accept ``--flag`` and ``--flag=1|0``)."""
    decls = [*spec.aliases, spec.flag_name]
    text = spec.help + (f"  [default: {spec.fallback.doc}]" if spec.fallback is not None else "")
    if spec.flag:
        return click.Option(decls, is_flag=True, default=spec.default, help=text)
    if spec.type is bool:
        return click.Option(
            decls,
            type=bool,
            is_flag=False,
            flag_value=True,
            default=spec.default,
            show_default=True,
            help=text,
        )
    return click.Option(
        decls,
        type=click.Choice(spec.choices) if spec.choices is not None else spec.type,
        default=spec.default,
        show_default=spec.default is not None and not spec.multiple,
        required=spec.required,
        metavar=spec.metavar,
        multiple=spec.multiple,
        help=text,
    )


def core_options() -> list[click.Option]:
    """The core options of ``train.py``, one per entry of :data:`.options.OPTION_SPECS`."""
    return [click_option(spec) for spec in OPTION_SPECS]


def check_finite_floats(params: Sequence[click.Parameter], raw: Mapping[str, Any]) -> None:
    """Every float option of ``params`` (e.g. the plugins') holds a finite number; else a usage error."""
    for param in params:
        value = raw.get(param.name or "")
        values = value if param.multiple and value is not None else [value]
        if isinstance(param.type, click.types.FloatParamType) and any(
            v is not None and not math.isfinite(v) for v in values
        ):
            flag = param.opts[-1] if param.opts else param.name
            raise click.UsageError(f"{flag} must be a finite number, got {value}")


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

    In this order: each option and their combinations, ``--outdir``, ``--device``, the plugins'
    ``validate_options``, the ``--resume`` network (and the plugins it requires), the dataset, the
    resolved options, the plugins' ``adjust_options``, their ``check_run`` against the final options and
    the opened dataset, and a plugin's real-batch sampler. Nothing is written except the embedded demo
    data set's cache. Raises ``click.UsageError`` for anything invalid.
    """
    from stylegan2_ada.dataset import DatasetError
    from stylegan2_ada.demo_data import DEMO_NAME, make_demo_dataset
    from stylegan2_ada.plugins import plugin_hooks
    from stylegan2_ada.training.data import open_training_dataset, plugin_sampler
    from stylegan2_ada.training.distributed import dist_info_from_env
    from stylegan2_ada.training.evaluation import check_detector
    from stylegan2_ada.training.snapshots import ResumeError, check_required_plugins, load_resume_checkpoint

    core = with_cli_defaults({k: v for k, v in raw.items() if k in CLI_DEFAULTS})
    plugin_opts = {k: v for k, v in raw.items() if k not in CLI_DEFAULTS}
    try:
        check_cli(core)
        check_outdir(core["outdir"])
        device = resolve_device(core["device"])
        if pm is not None:
            pm.hook.validate_options(options=dict(raw))
        if core["data"] == DEMO_NAME and not os.path.exists(DEMO_NAME):
            # The embedded default data set (stylegan2_ada/demo_data.py), generated once under --outdir.
            core["data"] = raw["data"] = str(
                make_demo_dataset(os.path.join(core["outdir"], ".cache", DEMO_NAME))
            )
        ckpt = load_resume_checkpoint(core["resume"], core["outdir"]) if core["resume"] else None
        if ckpt is not None:
            check_required_plugins(ckpt, plugin_names)
        rinfo = resume_info(ckpt) if ckpt is not None else None
        use_labels = bool(core["cond"])
        try:
            ds = open_training_dataset(
                core["data"],
                cond=use_labels,
                mirror=bool(core["mirror"]),
                subset=core["subset"],
                seed=int(core["seed"]),
                outdir=core["outdir"],
                max_classes=int(core["max_classes"]),
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
        if pm is not None:
            opts.plugin_hooks = plugin_hooks(pm, plugin_names)
            opts = adjust_by_plugins(pm, opts)
        check_detector(opts, pm)
    except (OptionsError, ResumeError, DatasetError) as exc:
        raise click.UsageError(str(exc)) from exc
    if pm is not None:
        pm.hook.check_run(options=opts.context_options(), dataset=ds)
        try:
            plugin_sampler(pm, opts, ds)
        except OptionsError as exc:
            raise click.UsageError(str(exc)) from exc
    return opts, ds, ckpt


def adjust_by_plugins(pm: Any, opts: TrainingOptions) -> TrainingOptions:
    """``opts`` with every plugin's ``adjust_options`` changes applied, in plugin order (each plugin sees
    the changes of those before it). Raises :class:`OptionsError` naming the plugin for a bad change."""
    from stylegan2_ada.plugins import call_adjust_options

    # The lambda reads `opts` when each plugin's turn comes, so every plugin sees the changes before it.
    for plugin, changes in call_adjust_options(pm, lambda: opts.context_options()):  # noqa: B023
        opts = apply_adjustment(opts, plugin, changes)
    return opts


def build_command(pm: Any, plugin_names: Sequence[str]) -> click.Command:
    """The ``train.py`` click command for the plugins in ``pm`` (their options included)."""
    from stylegan2_ada.plugins import collect_plugin_options

    params: list[click.Parameter] = core_options()
    plugin_params = collect_plugin_options(pm, reserved=params) if pm is not None else []

    def callback(**raw: Any) -> Any:
        check_finite_floats(plugin_params, raw)
        opts, ds, ckpt = prepare(raw, pm, plugin_names)
        if opts.dry_run:
            for line in describe_adjustments(opts):
                click.echo(line, err=True)
            click.echo(json.dumps(opts.to_dict(), indent=2))
            return opts
        from stylegan2_ada.training.loop import training_loop

        return training_loop(opts, pm=pm, dataset=ds, resume_ckpt=ckpt)

    return click.Command(
        "train.py",
        params=params + plugin_params,
        callback=callback,
        help="Train a (conditional) StyleGAN2-ADA. See docs/training.md.",
    )


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an expected failure (file system, unreadable input, a stopped run), or
    ``None`` for anything else (a bug: its traceback is worth seeing)."""
    from stylegan2_ada.checkpoint import CheckpointError
    from stylegan2_ada.dataset import DatasetError
    from stylegan2_ada.legacy_pickle import LegacyPickleError
    from stylegan2_ada.training.loop import TrainingStopped
    from stylegan2_ada.training.snapshots import ResumeError

    if isinstance(exc, OSError) and not isinstance(exc, CheckpointError):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror or exc}"
    if isinstance(
        exc, (CheckpointError, LegacyPickleError, DatasetError, ResumeError, OptionsError, TrainingStopped)
    ):
        return str(exc)
    return None


def main(argv: Sequence[str] | None = None, *, standalone_mode: bool = True) -> Any:
    """Entry point of ``train.py``. With ``standalone_mode=False`` returns the TrainingResult (or the
    options for ``--dry-run``) and raises ``click.UsageError`` (and any other error) instead of exiting.

    Standalone, usage errors exit with status 2 and expected failures (:func:`user_error_message`:
    file-system errors, unreadable snapshots or images, a run stopped by too many bad images) with
    status 1, each as one ``Error: ...`` line.
    """
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
    try:
        return cmd.main(args=args, prog_name="train.py", standalone_mode=standalone_mode)
    except Exception as exc:
        message = user_error_message(exc) if standalone_mode else None
        if message is None:
            raise
        click.echo(f"Error: {message}", err=True)
        sys.exit(1)
