"""Find, load, check and call plugins: the plugin manager of the StyleGAN2-ADA core.

A plugin is a module (or any object) with functions decorated with
:data:`stylegan2_ada.hookspecs.hookimpl`; the hooks are specified in :mod:`stylegan2_ada.hookspecs`.
:func:`create_plugin_manager` turns plugin names, as given with ``--plugin NAME``, into a fresh
:class:`pluggy.PluginManager`. Each name is resolved in this order:

1. an entry point named ``NAME`` in the group ``stylegan2_ada.plugins`` of an installed distribution
   (third-party packages; the built-in plugins are declared there too);
2. the built-in module ``plugins.NAME`` (so that a checkout that is not pip-installed still works);
3. a dotted module path (``NAME`` contains a ``.``), imported as it is.

Hooks run in the order the plugins were named (``tryfirst``/``trylast`` still apply). The hooks whose
results belong to one plugin (``plugin_options``, ``adjust_options``, ``loss_terms``, ``tick_statistics``,
``plugin_state``, ``restore_plugin_state``, ``resume_requirement``) and those only one plugin may answer
(``real_batch_sampler``, ``generator_labels``, ``phase_gradients``) are called through the helpers below,
which validate the results and tell the plugins apart; the others are called directly, e.g.
``pm.hook.training_setup(context=context)``.

All errors are :class:`PluginError`, a :class:`click.UsageError`: a command-line front prints its
message as ``Error: ...`` and exits with status 2, without a traceback.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import json
import pkgutil
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click
import pluggy
import torch

from stylegan2_ada import hookspecs
from stylegan2_ada.hookspecs import PHASES
from stylegan2_ada.plugin_api import PhaseBatch, PhaseData, PhaseGradients, TrainingContext

ENTRY_POINT_GROUP = "stylegan2_ada.plugins"
BUILTIN_PACKAGE = "plugins"
HOOK_NAMES = tuple(
    sorted(name for name, obj in vars(hookspecs).items() if hasattr(obj, f"{hookspecs.PROJECT_NAME}_spec"))
)
# Hooks whose results are kept per plugin: called one implementation at a time, so no wrappers.
_PER_PLUGIN_HOOKS = (
    "plugin_options",
    "adjust_options",
    "real_batch_sampler",
    "generator_labels",
    "loss_terms",
    "phase_gradients",
    "tick_statistics",
    "plugin_state",
    "restore_plugin_state",
    "resume_requirement",
)
_CORE = "the core"


class PluginError(click.UsageError):
    """A plugin could not be found, loaded or used; the message says which plugin and why."""


class PluginNotFoundError(PluginError):
    """No plugin of that name exists; the message lists the available ones."""


class PluginLoadError(PluginError):
    """The plugin was found but importing it failed (the original exception is chained)."""


class InvalidPluginError(PluginError):
    """A plugin breaks the hook contract: unknown or undecorated hooks, clashing options, bad results."""


class PluginManager(pluggy.PluginManager):
    """A :class:`pluggy.PluginManager` with the core's hookspecs that remembers where each plugin came from.

    ``plugin_sources`` maps each registered plugin name to a description such as
    ``"entry point 'pkg.mod' of pkg-dist 1.0"``, for logs and error messages.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.plugin_sources: dict[str, str] = {}


@dataclass(frozen=True)
class _Found:
    plugin: object
    source: str


# ------------------------------------------------------------------------------------------------------
# Finding plugins


def _entry_points() -> dict[str, list[importlib.metadata.EntryPoint]]:
    """Installed entry points of the plugin group by name; the same value declared twice counts once
    (e.g. an editable install seen both through site-packages and a stale ``*.egg-info``)."""
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        same_name = found.setdefault(ep.name, [])
        if all(other.value != ep.value for other in same_name):
            same_name.append(ep)
    return found


def _describe_entry_point(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist
    owner = f" of {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ep.value!r}{owner}"


def _builtin_names(builtin_package: str) -> list[str]:
    """Modules and packages inside the built-in plugin package, without importing any of them."""
    try:
        spec = importlib.util.find_spec(builtin_package)
    except ImportError:  # a parent package of a dotted builtin_package is missing
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(
        info.name
        for info in pkgutil.iter_modules(list(spec.submodule_search_locations))
        if not info.name.startswith("_")
    )


def available_plugins(*, builtin_package: str = BUILTIN_PACKAGE) -> dict[str, str]:
    """Names that ``--plugin`` accepts, sorted, mapped to where each comes from.

    Entry points of the group ``stylegan2_ada.plugins`` take precedence over built-in modules of the same
    name, as in :func:`create_plugin_manager`. Dotted module paths are accepted too but not listed.
    """
    result = {name: f"built-in module {builtin_package}.{name}" for name in _builtin_names(builtin_package)}
    for name, eps in _entry_points().items():
        result[name] = " and ".join(_describe_entry_point(ep) for ep in eps)
    return dict(sorted(result.items()))


def _load_error(name: str, source: str, exc: BaseException) -> PluginLoadError:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return PluginLoadError(
        f"plugin {name!r} ({source}) was found but failed to load: {type(exc).__name__}: {exc}{where}"
    )


def _import_if_exists(module_name: str, name: str, source: str) -> object | None:
    """Import ``module_name``; ``None`` if it (or a parent package) does not exist at all.

    Any other failure, including a missing module that the plugin itself imports, is a
    :class:`PluginLoadError`: the plugin exists, it is broken.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            return None
        raise _load_error(name, source, exc) from exc
    except Exception as exc:
        raise _load_error(name, source, exc) from exc


def _is_module_path(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def _not_found(name: str, builtin_package: str) -> PluginNotFoundError:
    available = available_plugins(builtin_package=builtin_package)
    close = difflib.get_close_matches(name, list(available), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    if available:
        width = max(map(len, available))
        listing = "\n".join(f"  {key.ljust(width)}  {value}" for key, value in available.items())
    else:
        listing = "  (none)"
    return PluginNotFoundError(
        f"unknown plugin {name!r}.{hint}\n"
        f"Available plugins:\n{listing}\n"
        f"A third-party plugin becomes available once its package is installed (pip install PACKAGE) "
        f"and declares an entry point in the group {ENTRY_POINT_GROUP!r}; a module on the Python path "
        f"can also be named by its dotted path (e.g. --plugin mypackage.myplugin)."
    )


def _resolve(
    name: str, entry_points: Mapping[str, list[importlib.metadata.EntryPoint]], builtin_package: str
) -> _Found:
    candidates = entry_points.get(name, [])
    if len(candidates) > 1:
        listing = "; ".join(_describe_entry_point(ep) for ep in candidates)
        raise PluginError(
            f"plugin name {name!r} is declared by several installed packages ({listing}); uninstall all "
            f"but one, or name the plugin module by its dotted path"
        )
    if candidates:
        source = _describe_entry_point(candidates[0])
        try:
            return _Found(candidates[0].load(), source)
        except Exception as exc:
            raise _load_error(name, source, exc) from exc
    if name.isidentifier():
        module_name = f"{builtin_package}.{name}"
        source = f"built-in module {module_name}"
        module = _import_if_exists(module_name, name, source)
        if module is not None:
            return _Found(module, source)
    if "." in name and _is_module_path(name):
        source = f"module {name}"
        module = _import_if_exists(name, name, source)
        if module is not None:
            return _Found(module, source)
    raise _not_found(name, builtin_package)


# ------------------------------------------------------------------------------------------------------
# Building and checking a manager


def _is_clean_name(name: object) -> bool:
    """A non-empty printable string without '/' or white space (fit for ``Loss/<plugin>/<term>``)."""
    return (
        isinstance(name, str)
        and bool(name)
        and name.isprintable()
        and "/" not in name
        and not any(ch.isspace() for ch in name)
    )


def _check_name(name: object) -> str:
    if not _is_clean_name(name):
        raise PluginError(f"invalid plugin name {name!r}: use a non-empty name without '/' or spaces")
    return name


def _suggest(hook_name: str) -> str:
    close = difflib.get_close_matches(hook_name, HOOK_NAMES, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _wrapper_problem(plugin_name: str, hook_name: str) -> str:
    return f"plugin {plugin_name!r}: hook {hook_name!r} is called per plugin and does not support wrappers"


def check_plugins(pm: pluggy.PluginManager) -> None:
    """Check the registered plugins against the hookspecs; :func:`create_plugin_manager` calls this.

    Raises :class:`InvalidPluginError` for a ``@hookimpl`` whose name is no hook (a misspelling; pluggy
    only notices it in ``check_pending``), for a function named like a hook but lacking ``@hookimpl``
    (it would never be called), for a plugin that implements no hook at all (``--plugin json``) and for
    wrappers on the hooks that are called per plugin.
    """
    problems: list[str] = []
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        for name, plugin in pm.list_name_plugin():
            for caller in pm.get_hookcallers(plugin) or []:
                if caller.has_spec():
                    continue
                impls = [i for i in caller.get_hookimpls() if i.plugin is plugin and not i.optionalhook]
                if impls:
                    problems.append(
                        f"plugin {name!r} implements unknown hook {caller.name!r}{_suggest(caller.name)}"
                    )
    for name, plugin in pm.list_name_plugin():
        if not pm.get_hookcallers(plugin):
            problems.append(f"plugin {name!r} implements no hooks (no function decorated with @hookimpl)")
        for hook_name in HOOK_NAMES:
            if (
                callable(getattr(plugin, hook_name, None))
                and pm.parse_hookimpl_opts(plugin, hook_name) is None
            ):
                problems.append(
                    f"plugin {name!r} defines {hook_name}() without @hookimpl (from stylegan2_ada.hookspecs "
                    f"import hookimpl), so it would never be called"
                )
    for hook_name in _PER_PLUGIN_HOOKS:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.wrapper or impl.hookwrapper:
                problems.append(_wrapper_problem(impl.plugin_name, hook_name))
    if problems:
        raise InvalidPluginError(
            "; ".join(problems) + f". The hooks are: {', '.join(HOOK_NAMES)} (see docs/plugins.md)."
        )


def create_plugin_manager(names: Sequence[str], *, builtin_package: str = BUILTIN_PACKAGE) -> PluginManager:
    """A new plugin manager with the core's hookspecs and the named plugins registered and checked.

    ``names``: plugin names as given with ``--plugin`` (entry point name, built-in name, or dotted module
    path); each plugin is registered under the name given. ``builtin_package`` is the package that holds
    the built-in plugins. Raises :class:`PluginNotFoundError` for an unknown name (listing the available
    ones), :class:`PluginLoadError` when a plugin fails to import, :class:`InvalidPluginError` when it
    breaks the hook contract and :class:`PluginError` for a name given twice.
    """
    if isinstance(names, str):
        raise TypeError("names must be a sequence of plugin names, not a single string")
    pm = PluginManager()
    entry_points = _entry_points()
    found: dict[str, _Found] = {}
    for name in names:
        if _check_name(name) in found:
            raise PluginError(f"plugin {name!r} is named twice")
        found[name] = _resolve(name, entry_points, builtin_package)
    # pluggy calls the most recently registered plugin first: register in reverse so that hooks run in
    # the order the plugins were named.
    for name, item in reversed(found.items()):
        if pm.is_registered(item.plugin):
            other = pm.get_name(item.plugin)
            raise PluginError(
                f"plugins {name!r} and {other!r} are the same module ({item.source}); name it once"
            )
        try:
            pm.register(item.plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise InvalidPluginError(f"plugin {name!r} ({item.source}) has an invalid hook: {exc}") from exc
        pm.plugin_sources[name] = item.source
    check_plugins(pm)
    return pm


def plugin_names_from_args(args: Sequence[str], option: str = "--plugin") -> list[str]:
    """The values of ``option`` (``--plugin NAME`` or ``--plugin=NAME``) in a raw argument list, in order.

    For a command line that must know its plugins (and so their options) before it can be parsed.
    Scanning stops at ``--``.
    """
    names: list[str] = []
    items = iter(args)
    for arg in items:
        if arg == "--":
            break
        if arg == option:
            value = next(items, None)
            if value is not None:
                names.append(value)
        elif arg.startswith(option + "="):
            names.append(arg[len(option) + 1 :])
    return names


# ------------------------------------------------------------------------------------------------------
# Calling the per-plugin hooks


def _impls(pm: pluggy.PluginManager, hook_name: str) -> Iterator[pluggy.HookImpl]:
    """The implementations of a per-plugin hook in call order (wrappers are refused)."""
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
        if impl.wrapper or impl.hookwrapper:
            raise InvalidPluginError(_wrapper_problem(impl.plugin_name, hook_name))
        yield impl


def _invoke(impl: pluggy.HookImpl, **kwargs: Any) -> Any:
    """Call one implementation with only the arguments it declares, as pluggy does."""
    return impl.function(*(kwargs[arg] for arg in impl.argnames))


def _results(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """``(plugin name, result)`` for each implementation of ``hook_name`` in call order, ``None`` skipped."""
    for impl in _impls(pm, hook_name):
        result = _invoke(impl, **kwargs)
        if result is not None:
            yield impl.plugin_name, result


def _mapping(plugin_name: str, hook_name: str, result: object, expected: str) -> Mapping[Any, Any]:
    if not isinstance(result, Mapping):
        raise InvalidPluginError(
            f"plugin {plugin_name!r}: {hook_name} must return {expected} or None, not {type(result).__name__}"
        )
    return result


def single_result(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> tuple[str, Any] | None:
    """``(plugin name, result)`` of the one plugin whose ``hook_name`` returns something, or ``None``.

    For the hooks only one plugin may answer (``real_batch_sampler``, ``generator_labels``,
    ``phase_gradients``): every implementation is called, and two answers are an
    :class:`InvalidPluginError` naming both plugins.
    """
    answers = list(_results(pm, hook_name, **kwargs))
    if len(answers) > 1:
        names = " and ".join(repr(name) for name, _ in answers)
        raise InvalidPluginError(f"plugins {names} both answer {hook_name}; only one plugin may")
    return answers[0] if answers else None


def implements(pm: pluggy.PluginManager | None, hook_name: str) -> bool:
    """Whether any registered plugin implements ``hook_name``."""
    return pm is not None and bool(getattr(pm.hook, hook_name).get_hookimpls())


def call_adjust_options(
    pm: pluggy.PluginManager, current: Callable[[], Mapping[str, Any]]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(plugin name, {option name: value})`` for each plugin's ``adjust_options``, in plugin order.

    Each plugin is called with ``current()`` at its turn, so it sees the changes the caller applied for
    the plugins before it. Raises :class:`InvalidPluginError` for a result that is not a mapping of
    option names.
    """
    for impl in _impls(pm, "adjust_options"):
        result = _invoke(impl, options=current())
        if result is None:
            continue
        changes = _mapping(impl.plugin_name, "adjust_options", result, "{option name: value}")
        bad = [key for key in changes if not isinstance(key, str)]
        if bad:
            raise InvalidPluginError(
                f"plugin {impl.plugin_name!r}: adjust_options keys must be option names, got {bad[0]!r}"
            )
        yield impl.plugin_name, dict(changes)


def call_phase_gradients(
    pm: pluggy.PluginManager, phase: str, context: TrainingContext, batch: PhaseBatch
) -> tuple[str, PhaseGradients] | None:
    """The plugin that takes over ``phase`` and its :class:`~stylegan2_ada.plugin_api.PhaseGradients`, or
    ``None``. Raises :class:`InvalidPluginError` for another kind of result, gradient names that are not
    parameters of ``batch.module`` or shapes that do not match them, or two plugins answering."""
    answer = single_result(pm, "phase_gradients", phase=phase, context=context, batch=batch)
    if answer is None:
        return None
    plugin_name, result = answer
    if not isinstance(result, PhaseGradients):
        raise InvalidPluginError(
            f"plugin {plugin_name!r}: phase_gradients must return PhaseGradients or None, not "
            f"{type(result).__name__}"
        )
    params = dict(batch.module.named_parameters())
    for name, grad in result.grads.items():
        if name not in params:
            raise InvalidPluginError(
                f"plugin {plugin_name!r}: phase_gradients in {phase} returned a gradient for {name!r}, "
                f"which is not a parameter of the trained module"
            )
        if not isinstance(grad, torch.Tensor) or grad.shape != params[name].shape:
            got = list(grad.shape) if isinstance(grad, torch.Tensor) else type(grad).__name__
            raise InvalidPluginError(
                f"plugin {plugin_name!r}: phase_gradients in {phase}: the gradient of {name!r} must be a "
                f"tensor of shape {list(params[name].shape)}, got {got}"
            )
    return plugin_name, result


def plugin_hooks(pm: pluggy.PluginManager, names: Sequence[str]) -> dict[str, list[str]]:
    """``{plugin name: sorted names of the hooks it implements}`` for the plugins ``names``, in that order
    (what ``options["plugin_hooks"]`` holds, e.g. for a plugin that refuses others that see real data)."""
    return {
        name: sorted(caller.name for caller in pm.get_hookcallers(pm.get_plugin(name)) or [])
        for name in names
    }


def resume_requirements(pm: pluggy.PluginManager, context: TrainingContext) -> dict[str, str]:
    """``{plugin name: reason}`` of the plugins without which a snapshot of this run must not be resumed."""
    return {name: str(reason) for name, reason in _results(pm, "resume_requirement", context=context)}


def call_loss_terms(
    pm: pluggy.PluginManager, phase: str, context: TrainingContext, data: PhaseData
) -> dict[str, torch.Tensor]:
    """Call every plugin's ``loss_terms`` for ``phase``; terms keyed ``"Loss/<plugin name>/<term name>"``.

    Each value is a 0-dim floating-point tensor (already weighted) to add to the phase's loss. Raises
    :class:`InvalidPluginError` for a result that is not a mapping, a term name that is empty or holds
    '/' or spaces, or a value that is not such a tensor. Values are not synchronised to the host (no
    finiteness check here; the training loop guards gradients against NaN/inf).
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    if data.phase != phase:
        raise ValueError(f"phase {phase!r} called with the data of phase {data.phase!r}")
    terms: dict[str, torch.Tensor] = {}
    for plugin_name, result in _results(pm, "loss_terms", phase=phase, context=context, data=data):
        for term, value in _mapping(plugin_name, "loss_terms", result, "{name: scalar tensor}").items():
            if not _is_clean_name(term):
                raise InvalidPluginError(
                    f"plugin {plugin_name!r}: loss term name {term!r} must be a non-empty string without "
                    f"'/' or spaces"
                )
            if not isinstance(value, torch.Tensor) or value.ndim != 0 or not value.is_floating_point():
                got = (
                    f"a {value.dtype} tensor of shape {list(value.shape)}"
                    if isinstance(value, torch.Tensor)
                    else type(value).__name__
                )
                raise InvalidPluginError(
                    f"plugin {plugin_name!r}: loss term {term!r} in phase {phase} must be a 0-dim "
                    f"floating-point tensor, not {got}"
                )
            terms[f"Loss/{plugin_name}/{term}"] = value
    return terms


def collect_plugin_options(
    pm: pluggy.PluginManager, reserved: Iterable[click.Parameter | str] = ()
) -> list[click.Option]:
    """All plugins' ``plugin_options``, in plugin order, checked for clashes.

    ``reserved``: the core command's parameters (``click.Parameter``), or names as strings: a string
    starting with ``-`` is an option flag (``"--batch"``), any other a parameter name (``"batch"``).
    ``--help`` is always reserved. Raises :class:`InvalidPluginError` when a plugin returns something that
    is not a ``click.Option`` or when a flag or parameter name is taken by the core or another plugin.
    """
    flag_owner: dict[str, str] = {"--help": _CORE}
    name_owner: dict[str, str] = {}
    for item in reserved:
        if isinstance(item, click.Parameter):
            if item.name:
                name_owner[item.name] = _CORE
            if isinstance(item, click.Option):
                flag_owner.update(dict.fromkeys([*item.opts, *item.secondary_opts], _CORE))
        elif item.startswith("-"):
            flag_owner[item] = _CORE
        else:
            name_owner[item] = _CORE

    def claim(owners: dict[str, str], key: str, owner: str, label: str) -> None:
        previous = owners.setdefault(key, owner)
        if previous != owner:
            raise InvalidPluginError(f"{label} of {owner} clashes with {label} of {previous}")

    options: list[click.Option] = []
    for plugin_name, result in _results(pm, "plugin_options"):
        owner = f"plugin {plugin_name!r}"
        if isinstance(result, (str, bytes, Mapping)) or not isinstance(result, Iterable):
            raise InvalidPluginError(f"{owner}: plugin_options must return a list of click.Option or None")
        for option in result:
            if not isinstance(option, click.Option):
                raise InvalidPluginError(
                    f"{owner}: plugin_options must return click.Option objects, not {type(option).__name__}"
                )
            for flag in [*option.opts, *option.secondary_opts]:
                claim(flag_owner, flag, owner, f"option {flag}")
            claim(name_owner, option.name or "", owner, f"parameter name {option.name!r}")
            options.append(option)
    return options


def collect_tick_statistics(pm: pluggy.PluginManager, context: TrainingContext) -> dict[str, float]:
    """All plugins' ``tick_statistics`` merged into ``{full name: float}``.

    Raises :class:`InvalidPluginError` for a name reported by two plugins, a name that is not a non-empty
    string, or a value ``float()`` cannot convert (a one-element tensor is converted, with a device sync).
    """
    stats: dict[str, float] = {}
    owner: dict[str, str] = {}
    for plugin_name, result in _results(pm, "tick_statistics", context=context):
        for key, value in _mapping(plugin_name, "tick_statistics", result, "{name: number}").items():
            if not isinstance(key, str) or not key:
                raise InvalidPluginError(
                    f"plugin {plugin_name!r}: statistic name {key!r} must be a non-empty string"
                )
            if key in owner:
                raise InvalidPluginError(
                    f"statistic {key!r} is reported by both plugin {owner[key]!r} and plugin {plugin_name!r}"
                )
            try:
                stats[key] = float(value)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise InvalidPluginError(
                    f"plugin {plugin_name!r}: statistic {key!r} is not a number: {value!r}"
                ) from exc
            owner[key] = plugin_name
    return stats


def plugin_states(pm: pluggy.PluginManager, context: TrainingContext) -> dict[str, Any]:
    """Each plugin's ``plugin_state``, keyed by plugin name, as it will come back from JSON.

    The states are round-tripped through JSON here, so a plugin gets back on resume exactly what is
    returned now (tuples become lists, keys strings). Plugins returning ``None`` are left out. Raises
    :class:`InvalidPluginError` for a state that is not a JSON-serialisable mapping.
    """
    states: dict[str, Any] = {}
    for plugin_name, state in _results(pm, "plugin_state", context=context):
        _mapping(plugin_name, "plugin_state", state, "a JSON-serialisable mapping")
        try:
            states[plugin_name] = json.loads(json.dumps(state))
        except (TypeError, ValueError) as exc:
            raise InvalidPluginError(
                f"plugin {plugin_name!r}: plugin_state is not JSON-serialisable: {exc}"
            ) from exc
    return states


def restore_plugin_states(
    pm: pluggy.PluginManager, context: TrainingContext, states: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Give each plugin back its own state with ``restore_plugin_state``; return the unclaimed names.

    ``states`` is what :func:`plugin_states` returned when the snapshot was written. A plugin without a
    stored state is not called. The sorted names of stored states that no registered plugin restored
    (plugin not enabled now, or without ``restore_plugin_state``) are returned so the caller can warn or
    refuse to resume.
    """
    claimed: set[str] = set()
    for impl in _impls(pm, "restore_plugin_state"):
        if impl.plugin_name in states:
            _invoke(impl, context=context, state=states[impl.plugin_name])
            claimed.add(impl.plugin_name)
    return sorted(set(states) - claimed)
