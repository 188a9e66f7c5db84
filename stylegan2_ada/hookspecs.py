"""The hook specifications: the only seam between the StyleGAN2-ADA core and its plugins.

Every hook is a documented function below. A plugin is any module or object with functions of the same
names decorated with :data:`hookimpl`; it may implement any subset. Built-in plugins (``plugins/``) are
registered exactly like third-party ones (see :mod:`stylegan2_ada.plugins` and ``docs/plugins.md``).

Phases. The training loop runs four phases per step, as upstream does:
``"Gmain"`` (generator adversarial loss), ``"Greg"`` (path-length regularisation, every 4th step),
``"Dmain"`` (discriminator adversarial loss on fakes and reals) and ``"Dreg"`` (R1 on reals, every 16th
step). When a lazy regulariser falls on the same step the upstream combined phases ``"Gboth"`` /
``"Dboth"`` are not used: the main and reg phases always run separately, so a plugin sees exactly one of
the four names above.

Order of the start-up hooks: ``plugin_options`` (before parsing), ``validate_options`` (the parsed
options), ``dataset_readers`` (opening the data), ``check_run`` (the resolved options and the opened
dataset, before the run folder exists; the last point where a plugin can refuse a run without leaving
anything behind), then ``training_setup`` (everything built, run folder created).

The objects handed to hooks, :class:`~stylegan2_ada.plugin_api.TrainingContext` and
:class:`~stylegan2_ada.plugin_api.PhaseData`, are defined in :mod:`stylegan2_ada.plugin_api`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # imported for annotations only
    import click
    import torch

    from stylegan2_ada.plugin_api import PhaseData, TrainingContext

PROJECT_NAME = "stylegan2_ada"
PHASES = ("Gmain", "Greg", "Dmain", "Dreg")
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def plugin_options() -> list[click.Option]:
    """Return extra command-line options for ``train.py``.

    Called once, before the command line is parsed, for the plugins named with ``--plugin``. The values
    arrive in ``context.options`` under the options' parameter names (``--noise`` -> ``"noise"``).
    Option names must not collide with the core's or another plugin's: a clash is an error.
    """


@hookspec
def validate_options(options: Mapping[str, Any]) -> None:
    """Check the parsed options; raise ``click.UsageError`` with a clear message for invalid ones.

    Called once after parsing and before anything is built (also for ``--dry-run``).
    """


@hookspec(firstresult=True)
def dataset_readers(path: str, options: Mapping[str, Any], cache_dir: str) -> Any:
    """Open a training dataset the core does not know how to read, or return ``None``.

    ``path`` is the ``--data`` argument; ``cache_dir`` is a folder beside the run (under ``--outdir``)
    that the plugin may use to cache converted data between runs. The first plugin that returns a
    dataset wins; if none does, the core opens ``path`` as an image folder or zip. The returned object
    must behave like :class:`stylegan2_ada.dataset.ImageDataset`: ``__len__``; ``__getitem__(i)`` ->
    ``(uint8 [C, H, W] array, float32 [label_dim] label)``; ``get_label(i)`` -> the label alone (the
    loop reads every label at start-up without decoding images); ``resolution``, ``num_channels``,
    ``label_dim``, ``has_labels``, ``name``. Optional: ``image_shape`` ``[C, H, W]``, ``class_names``,
    ``relpath(i)`` (names the file of an item that fails to load). An item whose ``__getitem__`` raises
    during training is skipped and replaced by another (logged, bounded by ``--max-bad-images``).
    ``options["max_classes"]`` is the most label dimensions the run accepts; more is an error.
    """


@hookspec
def check_run(options: Mapping[str, Any], dataset: Any) -> None:
    """Check that this run suits the plugin, before anything is built or written; raise
    ``click.UsageError`` with a clear message if it does not.

    Called once per process after the options are resolved and the training data is opened, and BEFORE
    the run folder exists; also for ``--dry-run``. ``options`` holds every resolved option, core and
    plugins, by name, exactly as ``context.options`` will (e.g. ``options["c_dim"]``, ``"resolution"``,
    ``"img_channels"``, ``"cond"``, ``"batch_gpu"``, the plugin's own); ``dataset`` is the opened
    training dataset (see :func:`dataset_readers`; e.g. ``label_dim``, ``class_names``). Refuse here
    what :func:`validate_options` cannot know yet (an unconditional run, class names that do not match a
    model's): ``train.py`` then exits with status 2 and leaves no run folder behind.
    """


@hookspec
def training_setup(context: TrainingContext) -> None:
    """Called once per process after the networks, dataset, optimizers and run directory exist.

    ``context`` (:class:`stylegan2_ada.plugin_api.TrainingContext`) holds every field documented there:
    the networks, ``G_opt``/``D_opt``, ``dataset``, ``device``, ``run_dir`` (``None`` on ranks other than
    0), ``options``, ``rank``, ``world_size``, ``cur_nimg``, ``cur_tick``, ``batch_size``, ``extras``.
    Load frozen models (from safe formats only: safetensors, or ``torch.load(weights_only=True)``),
    check compatibility with the networks, and raise ``click.UsageError`` for problems here; checks
    that need no networks belong in :func:`check_run`, which runs before the run folder exists.
    """


@hookspec
def loss_terms(phase: str, context: TrainingContext, data: PhaseData) -> Mapping[str, torch.Tensor] | None:
    """Return extra loss terms for ``phase``: ``{name: scalar tensor}`` or ``None``.

    Each term is added to the phase's loss before backward (so it must already carry its weight) and is
    logged as ``Loss/<plugin name>/<name>``. It is called once per accumulation round (each per-process
    batch of ``--batch-gpu`` examples); the loop scales the phase's whole loss, plugin terms included, by
    ``interval / rounds`` (the lazy-regularisation interval for ``Greg``/``Dreg``, 1 for the main phases),
    exactly as it scales the core terms. ``data`` holds the phase's tensors (see
    :class:`stylegan2_ada.plugin_api.PhaseData`, which lists the fields of each phase): for ``Gmain`` the
    generated images *before*
    augmentation ``gen_img`` [N, C, H, W] in [-1, 1], their labels ``gen_c`` [N, c_dim], latents and
    logits; for ``Dmain``/``Dreg`` also ``real_img`` / ``real_c``. A term must be differentiable with
    respect to the parameters the phase trains (G for G phases, D for D phases).
    """


@hookspec
def gradient_transforms(phase: str, context: TrainingContext, module: torch.nn.Module) -> None:
    """Transform the gradients of ``module`` (G or D) in place, after backward and before the optimizer step.

    Called once per phase per step, after gradient accumulation, the cross-rank all-reduce and the
    NaN/inf guard. ``module.parameters()`` carry ``.grad`` (``None`` for parameters that got none).
    """


@hookspec
def tick_statistics(context: TrainingContext) -> Mapping[str, float] | None:
    """Return extra statistics for this tick, ``{full name: value}``, e.g. ``{"Privacy/epsilon": 2.9}``.

    Called on every rank at the end of each tick; values are written to ``stats.jsonl``, TensorBoard and
    the progress line by rank 0.
    """


@hookspec
def plugin_state(context: TrainingContext) -> Mapping[str, Any] | None:
    """Return JSON-serialisable state to store in each snapshot, so that ``--resume`` can restore it.

    Stored per plugin name; on resume it is handed back to the same plugin through
    :func:`restore_plugin_state`, after :func:`training_setup`.
    """


@hookspec
def restore_plugin_state(context: TrainingContext, state: Mapping[str, Any]) -> None:
    """Restore what :func:`plugin_state` returned, when resuming from a snapshot that holds it."""


@hookspec(firstresult=True)
def feature_extractors(path: str, device: torch.device) -> Any:
    """Open a feature-extractor file (``--detector PATH`` of the metrics) the plugin recognises, or return ``None``.

    Asked before the core's own kinds (TorchScript, torch.export, torchvision weights); the first plugin that
    returns an extractor wins. Recognise the file by its content and never unpickle it. The extractor follows
    :class:`stylegan2_ada.metrics.extractors.FeatureExtractor`: ``__call__(uint8 [N, C, H, W]) -> float32
    [N, F]`` on ``device`` (C = 1 or 3: adapt the channels the network needs), ``name``, ``feature_dim``,
    ``content_hash`` (changes whenever the features could change; it keys the real-feature cache) and
    ``describe() -> dict`` (JSON-able, written into the metric files).

    This hook serves plugins named with ``--plugin``. A kind of file that should work without naming
    anything is better declared as an *extractor provider*: an entry point in the group
    ``stylegan2_ada.feature_extractors`` whose object is a function with this hook's arguments and
    result, asked after the plugins and before the core's kinds (see
    :mod:`stylegan2_ada.metrics.extractors`).
    """
