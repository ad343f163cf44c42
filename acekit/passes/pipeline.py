"""Pipelines: ordered passes, declared in Python or as a spec string, run with checks."""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from acekit.ir.graph import Graph, Node
from acekit.ir.verify import VerificationError
from acekit.logging import get_logger
from acekit.passes.base import Pass, PassResult
from acekit.passes.spec import PipelineSpecError, SpecItem, format_value, parse_spec, parse_value

if TYPE_CHECKING:
    from acekit.ir.schema import OpTable

log = get_logger(__name__)

#: Environment switch for verifying the graph after every pass (the tests turn it on).
VERIFY_ENV = "ACEKIT_VERIFY_PASSES"


class PassLookup(Protocol):
    """What a pipeline needs from the plugin registry to resolve spec names."""

    @property
    def passes(self) -> Mapping[str, type[Pass]]: ...

    @property
    def presets(self) -> Mapping[str, str]: ...


class UnknownPassError(KeyError):
    """A spec names a pass or preset that no plugin registers."""

    def __str__(self) -> str:
        return str(self.args[0])


class PassFailedError(RuntimeError):
    """A pass raised while running; names the pass, the node and what ran before."""

    def __init__(
        self, pass_name: str, node: Node | None, ran_before: Sequence[str], cause: BaseException
    ) -> None:
        self.pass_name = pass_name
        self.node = node
        self.ran_before = tuple(ran_before)
        where = f" on node {node.describe()}" if node is not None else ""
        before = ", ".join(ran_before) if ran_before else "none"
        super().__init__(
            f"pass '{pass_name}' failed{where}: {cause}\n  passes that ran before it: {before}"
        )


class PassBugError(RuntimeError):
    """A pass returned a graph that fails verification: a bug in that pass."""

    def __init__(self, pass_name: str, error: VerificationError, ran_before: Sequence[str]) -> None:
        self.pass_name = pass_name
        self.node = error.first_node
        self.ran_before = tuple(ran_before)
        before = ", ".join(ran_before) if ran_before else "none"
        super().__init__(
            f"pass '{pass_name}' produced an invalid graph; this is a bug in pass "
            f"'{pass_name}', please report it to its plugin's authors.\n{error}\n"
            f"  passes that ran before it: {before}"
        )


class PassError(RuntimeError):
    """Raised by a pass that cannot handle a node; the pipeline reports the node."""

    def __init__(self, message: str, node: Node | None = None) -> None:
        self.node = node
        super().__init__(message)


@attrs.frozen
class PipelineResult:
    """The graph after every pass and each pass's result, in order."""

    graph: Graph
    results: tuple[tuple[str, PassResult], ...]

    @property
    def modified(self) -> bool:
        """Whether any pass changed the graph."""
        return any(result.modified for _, result in self.results)


def _default_registry() -> PassLookup:
    from acekit.plugin import get_registry

    return get_registry()


def _verify_default() -> bool:
    return os.environ.get(VERIFY_ENV, "").lower() in ("1", "true", "yes", "on")


class Pipeline:
    """An ordered list of passes (and named sub-pipelines such as presets).

    Declared in Python, ``Pipeline([RemoveDropout(), FoldBatchNorm(eps=1e-5)])``, or from
    a spec string, ``Pipeline.from_spec("remove-dropout,fold-bn{eps=1e-5}")``.
    :meth:`spec` prints a pipeline back as its spec string.
    """

    def __init__(self, steps: Sequence[Pass | Pipeline], *, name: str | None = None) -> None:
        for step in steps:
            if not isinstance(step, Pass | Pipeline):
                raise TypeError(f"a pipeline step must be a Pass or Pipeline, got {step!r}")
            if isinstance(step, Pass) and not step.name:
                raise TypeError(f"{type(step).__name__} has no 'name'; every pass needs one")
        self.steps: tuple[Pass | Pipeline, ...] = tuple(steps)
        self.name = name
        # Options as the user wrote them in a spec, so spec() gives back the same text.
        self._spelled: dict[int, SpecItem] = {}

    # -- building --------------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: str, registry: PassLookup | None = None) -> Pipeline:
        """Build a pipeline from a spec string, resolving names through the plugins."""
        items = parse_spec(spec)
        lookup = registry if registry is not None else _default_registry()
        steps: list[Pass | Pipeline] = []
        spelled: dict[int, SpecItem] = {}
        for item in items:
            step = _resolve(item, spec, lookup)
            if isinstance(step, Pass):
                spelled[id(step)] = item
            steps.append(step)
        pipeline = cls(steps)
        pipeline._spelled = spelled
        return pipeline

    @classmethod
    def preset(cls, name: str, registry: PassLookup | None = None) -> Pipeline:
        """The named preset (e.g. ``cleanup``) registered by a plugin."""
        return cls.from_spec(name, registry)

    # -- reading -----------------------------------------------------------------------------

    def spec(self) -> str:
        """The pipeline as a spec string (round-trips through :meth:`from_spec`)."""
        parts = []
        for step in self.steps:
            if isinstance(step, Pipeline):
                parts.append(step.name if step.name else step.spec())
            elif id(step) in self._spelled:
                parts.append(self._spelled[id(step)].text())
            else:
                parts.append(_canonical_text(step))
        return ",".join(parts)

    def flatten(self) -> list[Pass]:
        """Every pass in run order, presets expanded."""
        passes: list[Pass] = []
        for step in self.steps:
            passes.extend(step.flatten() if isinstance(step, Pipeline) else [step])
        return passes

    def __repr__(self) -> str:
        return f"Pipeline({self.spec()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(self.spec())

    # -- running -------------------------------------------------------------------------------

    def run(
        self,
        graph: Graph,
        *,
        verify: bool | None = None,
        ops: OpTable | None = None,
        hooks: Any = None,
    ) -> PipelineResult:
        """Run every pass in order on ``graph``.

        With ``verify`` (default: the ``ACEKIT_VERIFY_PASSES`` environment switch) the
        graph is verified after each pass, and a pass whose output fails is reported as
        that pass's bug. Each pass logs one event with its stats and fires the
        ``acekit_pass_start`` / ``acekit_pass_end`` hooks.
        """
        check = _verify_default() if verify is None else verify
        hook = hooks if hooks is not None else _default_hooks()
        ran: list[str] = []
        results: list[tuple[str, PassResult]] = []
        for pass_ in self.flatten():
            hook.acekit_pass_start(pass_obj=pass_, graph=graph)
            started = time.perf_counter()
            try:
                result = pass_(graph)
            except (PassFailedError, PassBugError):
                raise
            except Exception as error:
                node = getattr(error, "node", None)
                raise PassFailedError(pass_.name, node, ran, error) from error
            seconds = time.perf_counter() - started
            if check:
                try:
                    result.graph.verify(ops)
                except VerificationError as error:
                    raise PassBugError(pass_.name, error, ran) from error
            # Passes print their own human lines ("Removed 37 Dropout layers"); this
            # structured event goes to the run's log file for machines and debugging.
            log.debug(
                f"Ran pass '{pass_.name}'",
                pass_name=pass_.name,
                modified=result.modified,
                seconds=round(seconds, 4),
                **dict(result.stats),
            )
            hook.acekit_pass_end(pass_obj=pass_, graph=result.graph, result=result)
            ran.append(pass_.name)
            results.append((pass_.name, result))
            graph = result.graph
        return PipelineResult(graph, tuple(results))


def _default_hooks() -> Any:
    from acekit.plugin import get_plugin_manager

    return get_plugin_manager().hook


def _canonical_text(step: Pass) -> str:
    defaults = step.default_options()
    changed = [
        (key, value)
        for key, value in step.options().items()
        if key not in defaults or defaults[key] != value
    ]
    if not changed:
        return step.name
    return step.name + "{" + ",".join(f"{k}={format_value(v)}" for k, v in changed) + "}"


#: Option annotations checked before a pass is built, with what they accept.
_OPTION_KINDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "int": ("an integer", (int,)),
    "float": ("a number", (int, float)),
    "bool": ("true or false", (bool,)),
    "str": ("a string", (str,)),
}


def _type_problem(annotation: object, value: object) -> str | None:
    """What an option of type ``annotation`` accepts, when ``value`` is not that."""
    name = getattr(annotation, "__name__", annotation)
    if not isinstance(name, str):
        return None
    optional = name.endswith(" | None")
    kind = _OPTION_KINDS.get(name.removesuffix(" | None"))
    if kind is None or (optional and value is None):
        return None
    what, types = kind
    # bool is an int in Python; an integer or number option must not take true/false.
    if isinstance(value, types) and (bool in types or not isinstance(value, bool)):
        return None
    return what + (" (or none)" if optional else "")


def _resolve(item: SpecItem, spec: str, lookup: PassLookup) -> Pass | Pipeline:
    passes, presets = lookup.passes, lookup.presets
    if item.name in presets:
        if item.options:
            raise PipelineSpecError(spec, item.column, f"preset {item.name!r} takes no options")
        nested = Pipeline.from_spec(presets[item.name], lookup)
        return Pipeline(nested.steps, name=item.name)
    if item.name not in passes:
        known = sorted({*passes, *presets})
        close = difflib.get_close_matches(item.name, known, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownPassError(
            f"unknown pass {item.name!r} in pipeline spec {spec!r}.{hint}\n"
            f"  installed passes and presets: {', '.join(known) if known else 'none'}"
        )
    cls = passes[item.name]
    fields = {f.name: f for f in attrs.fields(cls)} if attrs.has(cls) else {}
    kwargs: dict[str, object] = {}
    for key, text in item.options:
        if key not in fields:
            allowed = ", ".join(fields) or "none"
            raise PipelineSpecError(
                spec,
                spec.find(key, item.column),
                f"pass {item.name!r} has no option {key!r} (its options: {allowed})",
            )
        value = parse_value(text)
        problem = _type_problem(fields[key].type, value)
        if problem is not None:
            raise PipelineSpecError(
                spec,
                spec.find(key, item.column),
                f"option {key!r} of pass {item.name!r} must be {problem}; got {value!r}",
            )
        if fields[key].type in (float, "float", "float | None") and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise PipelineSpecError(
            spec, item.column, f"bad options for pass {item.name!r}: {error}"
        ) from None
