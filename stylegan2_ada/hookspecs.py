"""The hook specifications: the only seam between the StyleGAN2-ADA core and its plugins.

Every hook is a documented function below. A plugin is any module or object with functions of the same
names decorated with :data:`hookimpl`; it may implement any subset. Built-in plugins (``plugins/``) are
registered exactly like third-party ones (see :mod:`stylegan2_ada.plugins` and ``docs/plugins.md``).

Phases. The training loop runs up to four phases per step, as upstream does:
``"Gmain"`` (generator adversarial loss), ``"Greg"`` (path-length regularisation, every 4th step),
``"Dmain"`` (discriminator adversarial loss on fakes and reals) and ``"Dreg"`` (R1 on reals, every 16th
step). By default the main and reg phases run separately, each with its own optimizer step. When the
resolved option ``combine_d_reg`` is set (a plugin asks for it through :func:`adjust_options`), R1 joins
D's main phase on the steps where it is due: that phase is then called ``"Dboth"`` (one loss per example
holding its real term, its fake partner's term and its R1 term; one optimizer step) and there is no
``"Dreg"``. ``"Gboth"`` is never used. :data:`PHASES` lists every name a hook may see.

Order of the start-up hooks: ``plugin_options`` (before parsing), ``validate_options`` (the parsed
options), ``dataset_readers`` (opening the data), ``adjust_options`` (changes to the resolved options),
``check_run`` (the final options and the opened dataset, before the run folder exists; the last point
where a plugin can refuse a run without leaving anything behind), then ``real_batch_sampler`` and
``training_setup`` (everything built, run folder created).

Per step, in this order: the stop check (:meth:`~stylegan2_ada.plugin_api.TrainingContext.request_stop`),
the real batch (``real_batch_sampler``), then per phase the latents (labels from ``generator_labels``),
``phase_gradients`` (a plugin may take over the phase) or the core's loss with ``loss_terms``, the
cross-rank reduction, the plugin's ``finish``, the NaN/inf guard, ``gradient_transforms`` and the
optimizer step; then ``step_end``. At the end of each tick ``tick_statistics``; at each snapshot
``plugin_state`` and ``resume_requirement``; once at the end ``training_end``.

The objects handed to hooks, :class:`~stylegan2_ada.plugin_api.TrainingContext` and
:class:`~stylegan2_ada.plugin_api.PhaseData`, are defined in :mod:`stylegan2_ada.plugin_api`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # imported for annotations only
    import click
    import numpy as np
    import torch

    from stylegan2_ada.plugin_api import (
        PhaseBatch,
        PhaseData,
        PhaseGradients,
        RealBatchSampler,
        StepInfo,
        TrainingContext,
    )

PROJECT_NAME = "stylegan2_ada"
PHASES = ("Gmain", "Greg", "Dmain", "Dboth", "Dreg")
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
def adjust_options(options: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Return changes to the resolved options, ``{option name: value}``, or ``None``.

    Called once per process after the options are resolved and the dataset is opened, before
    :func:`check_run` (also for ``--dry-run``), in plugin order; ``options`` is what
    ``context.options`` would hold (core and plugin options, with earlier plugins' changes applied).
    Use it where a plugin needs a setting the user must not get wrong, e.g. ``{"mbstd_group": 1}``, a
    fixed augmentation probability ``{"aug": "fixed", "p": 0.2}``, or the run-behaviour fields that
    exist for plugins only: ``combine_d_reg`` (R1 inside D's main phase, ``"Dboth"``), ``reals_grid``
    (write ``reals.png``), ``real_score_stats`` (report ``Loss/scores/real`` and ``Loss/signs/real``),
    ``dataset_details`` (log the dataset's size and the names of items that fail to load).

    The core checks each change like the command line's value (type, range, choices, and the
    combinations: batch sizes, ``--aug``/``--p``, ...) and refuses a change to an option that is fixed by
    the time this runs (``data``, ``outdir``, ``resume``, ``cond``, ``cfg``, ``seed``, the architecture
    ...; see ``stylegan2_ada.training.options.ADJUSTABLE``) or that another plugin set to a different
    value, as a usage error naming the plugin. Every change is recorded in the resolved options
    (``adjusted``: ``{name: {"plugin", "from", "to"}}``), so it shows in ``--dry-run`` and
    ``training_options.json``, and it is logged at the start of the run.
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
def real_batch_sampler(options: Mapping[str, Any], dataset: Any) -> RealBatchSampler | None:
    """Return the object that chooses each step's real examples, or ``None`` for the core's sampler.

    The core's sampler shows every rank ``batch // gpus`` examples per step, epoch after epoch. A plugin's
    sampler (:class:`~stylegan2_ada.plugin_api.RealBatchSampler`) may give any number, 0 included, e.g.
    Poisson sampling (:class:`stylegan2_ada.training.data.PoissonSampler`: each example independently
    with probability q). Then:

    - rank ``r`` trains D on ``indices(step)[r::gpus]``, in rounds of at most ``batch_gpu`` examples;
      G's phases keep their fixed batch (``batch`` fakes per step);
    - D's losses are summed over the examples and divided by ``expected_batch`` (not the realised size);
      each D phase's fakes are paired one to one with the reals;
    - ``cur_nimg`` (and so kimg, ticks and ``--kimg``) counts the real examples actually shown;
    - a rank with no examples runs no network in D's phases; its gradients are zeros (or what
      ``phase_gradients`` returns), so the cross-rank reduction stays in step;
    - the minibatch-stddev group must be 1 (batches of any size; set ``mbstd_group`` through
      :func:`adjust_options`): anything else is refused before the run folder exists.

    Called with the final options and the opened dataset: once in the checks before the run folder
    exists (to refuse a bad sampler early) and once per process when the run starts. At most one plugin
    may return a sampler.
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
def generator_labels(context: TrainingContext, count: int, rng: np.random.Generator) -> np.ndarray | None:
    """Return G's conditioning labels, float32 ``[count, c_dim]``, or ``None`` for the core's.

    The core draws labels of random training examples (the data's class frequencies). A plugin may use
    another distribution, e.g. uniform over the classes. Used for every latent batch of training (all
    phases, every rank; draw from ``rng``, the loop's own generator, so that a resumed run continues the
    same stream) and for the image grids ``fakes*.png`` (there with a fixed ``rng``, and the rows sorted
    by class). At most one plugin may return labels.
    """


@hookspec
def phase_gradients(phase: str, context: TrainingContext, batch: PhaseBatch) -> PhaseGradients | None:
    """Take over the gradient computation of a phase, or return ``None`` to let the core do it.

    Called once per phase per step on every rank, before the core computes anything for it. ``batch``
    (:class:`~stylegan2_ada.plugin_api.PhaseBatch`) holds the phase's real examples and latents and the
    core's loss object (what the core would have used). A plugin that returns
    :class:`~stylegan2_ada.plugin_api.PhaseGradients` replaces the core's loss, the plugins'
    ``loss_terms`` and the backward pass for this phase. Then, in this order: the core writes the SUM
    over ranks of the returned ``grads`` to ``.grad`` (missing parameters: zeros), calls ``finish(module)``
    on every rank (e.g. noise from ``context.shared_generator``, then division by
    ``batch.expected_batch``), applies the NaN/inf guard (counted in ``Progress/nonfinite_grads``), runs
    ``gradient_transforms`` and steps the optimizer. Must return the same kind of answer on every rank.
    At most one plugin may take over a phase.
    """


@hookspec
def gradient_transforms(phase: str, context: TrainingContext, module: torch.nn.Module) -> None:
    """Transform the gradients of ``module`` (G or D) in place, after backward and before the optimizer step.

    Called once per phase per step, after gradient accumulation (or a plugin's :func:`phase_gradients`
    and its ``finish``), the cross-rank reduction and the NaN/inf guard. ``module.parameters()`` carry
    ``.grad`` (``None`` for parameters that got none).
    """


@hookspec
def step_end(context: TrainingContext, step: StepInfo) -> None:
    """Called on every rank after each training step (its phases, G's EMA, ADA, the counters).

    ``step`` (:class:`~stylegan2_ada.plugin_api.StepInfo`): the step's index, the phases it ran and its
    real batch (this rank's and the total). A plugin may call ``context.request_stop(reason)`` here
    (e.g. a budget is spent): the run then ends before the next step with a final tick and snapshot.
    """


@hookspec
def training_end(context: TrainingContext, stop_reason: str | None) -> None:
    """Called once on every rank when training ends, after the final tick and snapshot.

    ``stop_reason`` is ``None`` when the run reached ``--kimg``; otherwise why it stopped early (a plugin's
    ``request_stop``, or too many training items that failed to load). Not called when the run fails
    with an error.
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


@hookspec
def resume_requirement(context: TrainingContext) -> str | None:
    """Return why a snapshot of this run must not be resumed without this plugin, or ``None``.

    Called whenever a snapshot is written; a reason is stored in it (``required_plugins``). Resuming such
    a snapshot without the plugin enabled under the same name is then a usage error that quotes the
    reason, before any run folder exists (e.g. a plugin whose state would otherwise silently be lost).
    """
