"""The hook specifications of acekit: the whole surface a plugin can implement.

Every hook is named ``acekit_<something>`` and is called by keyword, so an
implementation may accept any subset of the arguments listed here (pluggy passes only
the ones it asks for). Hooks are grouped by the stage of a run in which they are called:

1. **Registration** (once per process, when the plugin manager first loads plugins):
   each hook receives ``registry``, a :class:`~acekit.plugin.registry.Registrar` bound
   to the calling plugin, and adds things to it. Nothing is returned. Stages run in
   the order ops, parsers, passes, quantizers, targets, pipeline presets, and within
   a stage plugin by plugin, so an error or a name conflict names the plugin at fault.
2. **Choice** (when a model is parsed): ``acekit_choose_parser`` picks the parser for
   a model; the first plugin that answers wins.
3. **Lifecycle** (while a run is in progress): observers of passes, calibration and
   export. Their return values are ignored; they must not modify what they receive.

Implement a hook with the :data:`acekit.plugin.hookimpl` marker::

    from acekit.plugin import hookimpl

    @hookimpl
    def acekit_register_passes(registry):
        registry.add_pass(MyPass)

``docs/hooks.md`` is the reference generated from these docstrings; a test keeps the
two in step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from acekit.ir.graph import Graph
    from acekit.passes.base import Pass, PassResult
    from acekit.plugin.interfaces import Target
    from acekit.plugin.registry import Registrar

#: The pluggy project name: hook names start with ``acekit_``.
PROJECT_NAME = "acekit"

#: Marks a function of this module as a hook specification.
hookspec = pluggy.HookspecMarker(PROJECT_NAME)

#: Marks a plugin's function as the implementation of an acekit hook.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: The hooks by stage of a run, in calling order (the layout of ``docs/hooks.md``).
HOOK_GROUPS: dict[str, tuple[str, ...]] = {
    "Registration": (
        "acekit_register_ops",
        "acekit_register_parsers",
        "acekit_register_passes",
        "acekit_register_quantizers",
        "acekit_register_targets",
        "acekit_register_pipeline_presets",
    ),
    "Choice": ("acekit_choose_parser",),
    "Lifecycle": (
        "acekit_pass_start",
        "acekit_pass_end",
        "acekit_calibration_step",
        "acekit_export_done",
    ),
}


# -- 1. Registration -------------------------------------------------------------------------


@hookspec
def acekit_register_ops(registry: Registrar) -> None:
    """Add ops: each one's whole definition, as the core ops are defined.

    Called once, when plugins are loaded, before every other registration hook, so
    the parsers and passes registered afterwards can build nodes of these ops.

    :param registry: The registrar of this plugin; call ``registry.add_op(OpDef(...))``
        for each op (:class:`acekit.ops.OpDef`: schema, kernel, type rule, the torch
        callables / Tensor methods / ATen ops the parsers map to it, ONNX lowering).
        Its schema joins :data:`acekit.ir.core_ops.OPS`, the table the verifier checks
        nodes against, and its kernel the table generated modules call. An op name that
        already exists (a core op or another plugin's op) is an error.

    Not ``firstresult``; the return value is ignored.
    """


@hookspec
def acekit_register_parsers(registry: Registrar) -> None:
    """Add parsers: objects that turn a ``torch.nn.Module`` into a :class:`~acekit.ir.Graph`.

    Called once, when plugins are loaded, after ``acekit_register_ops``.

    :param registry: The registrar of this plugin; call ``registry.add_parser(parser)``
        with an object following :class:`acekit.plugin.interfaces.Parser` (``name``,
        ``summary``, ``parse(model, example_inputs)``).

    Not ``firstresult``; the return value is ignored.
    """


@hookspec
def acekit_register_passes(registry: Registrar) -> None:
    """Add passes that pipelines can name in their spec strings.

    Called once, when plugins are loaded, after ``acekit_register_parsers``.

    :param registry: The registrar of this plugin; call ``registry.add_pass(PassClass)``
        with a subclass of :class:`acekit.passes.Pass` whose ``name`` is its spec word.
        Two plugins registering the same pass name is a
        :class:`~acekit.plugin.registry.PluginConflictError`.

    Not ``firstresult``; the return value is ignored.
    """


@hookspec
def acekit_register_quantizers(registry: Registrar) -> None:
    """Add quantization algorithms (post-training calibration, QAT, ...).

    Called once, when plugins are loaded, after ``acekit_register_passes``.

    :param registry: The registrar of this plugin; call ``registry.add_quantizer(q)``
        with an object following :class:`acekit.plugin.interfaces.Quantizer`
        (``name``, ``summary``).

    Not ``firstresult``; the return value is ignored.
    """


@hookspec
def acekit_register_targets(registry: Registrar) -> None:
    """Add deployment targets (runtimes a quantized model can be exported for).

    Called once, when plugins are loaded, after ``acekit_register_quantizers``.

    :param registry: The registrar of this plugin; call ``registry.add_target(target)``
        with an object following :class:`acekit.plugin.interfaces.Target` (``name``,
        ``title``, ``summary``, ``export(graph, path, options)``). The name is what
        ``DeploymentSettings.target_framework`` accepts.

    Not ``firstresult``; the return value is ignored.
    """


@hookspec
def acekit_register_pipeline_presets(registry: Registrar) -> None:
    """Add named pipelines that spec strings can use like a pass (``"cleanup,ptq"``).

    Called once, when plugins are loaded, last of the registration hooks, so every
    pass is known by then.

    :param registry: The registrar of this plugin; call
        ``registry.add_preset(name, spec, summary="")`` where ``spec`` is a pipeline
        spec string such as ``"remove-dropout,fold-bn"``. A preset may not be named
        like a pass or another plugin's preset.

    Not ``firstresult``; the return value is ignored.
    """


# -- 2. Choice ---------------------------------------------------------------------------------


@hookspec(firstresult=True)
def acekit_choose_parser(model: Any, example_inputs: tuple[Any, ...]) -> str | None:
    """Choose the parser for ``model``.

    Called when a model is parsed without naming a parser. Plugins are asked in turn
    (later-registered and ``tryfirst`` implementations first) until one answers.

    :param model: The ``torch.nn.Module`` (or other model object) to parse.
    :param example_inputs: The positional inputs the model will be called with.
    :return: The name of a registered parser, or ``None`` to let other plugins decide.

    ``firstresult``: the first non-``None`` answer wins and the remaining
    implementations are not called.
    """


# -- 3. Lifecycle ------------------------------------------------------------------------------


@hookspec
def acekit_pass_start(pass_obj: Pass, graph: Graph) -> None:
    """Observe a pass about to run.

    Called by :meth:`acekit.passes.Pipeline.run` before each pass (presets are
    expanded, so once per pass actually run).

    :param pass_obj: The pass instance, with its options (``pass_obj.name``,
        ``pass_obj.options()``).
    :param graph: The graph the pass is about to transform. Do not modify it.

    Not ``firstresult``; every implementation is called and return values are ignored.
    """


@hookspec
def acekit_pass_end(pass_obj: Pass, graph: Graph, result: PassResult) -> None:
    """Observe a pass that finished successfully.

    Called by :meth:`acekit.passes.Pipeline.run` after each pass returned (and, when
    verification is on, after its output graph verified). Not called for a pass that
    raised: the pipeline's error reports that one.

    :param pass_obj: The pass instance that ran.
    :param graph: The graph the pass returned (``result.graph``).
    :param result: The :class:`~acekit.passes.PassResult` with ``modified`` and
        ``stats``.

    Not ``firstresult``; every implementation is called and return values are ignored.
    """


@hookspec
def acekit_calibration_step(step: int, total: int | None, graph: Graph) -> None:
    """Observe one step of post-training calibration.

    Called by the calibration loop after each batch has gone through the observers.

    :param step: The number of batches processed so far, starting at 1.
    :param total: The number of batches the calibration will process, or ``None``
        when the data loader has no length.
    :param graph: The graph being calibrated. Do not modify it.

    Not ``firstresult``; every implementation is called and return values are ignored.
    """


@hookspec
def acekit_export_done(path: Path, target: Target, graph: Graph) -> None:
    """Observe a finished export.

    Called after a target wrote the deployable model and the file was checked.

    :param path: Where the model was written (e.g. ``out/model.onnx``).
    :param target: The target object that exported it (``target.name``,
        ``target.title``).
    :param graph: The graph that was exported. Do not modify it.

    Not ``firstresult``; every implementation is called and return values are ignored.
    """
