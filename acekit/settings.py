"""The settings of an acekit run: frozen, validated, saved to and loaded from files.

The sections mirror the run log users know from CLIKA ACE::

    Settings
    ├── training      TrainingSettings
    ├── distributed   DistributedSettings
    ├── quantization  GlobalQuantizationSettings
    ├── layers        {layer name or subgraph path: LayerQuantizationSettings}
    └── deployment    DeploymentSettings

Every section is an ``attrs`` frozen class validated on construction; a value that is
not allowed raises :class:`SettingsError` whose message says what is allowed.  Change a
value with :func:`attrs.evolve`::

    s = Settings(quantization=GlobalQuantizationSettings(weights_num_bits=4))
    s = attrs.evolve(s, deployment=DeploymentSettings(target_framework="onnxruntime"))

Files (TOML, YAML, JSON, chosen by extension) round-trip losslessly through
:meth:`Settings.save` and :meth:`Settings.from_file`.  See ``docs/settings.md``.
"""

from __future__ import annotations

import difflib
import enum
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import attrs
import tomli_w
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from acekit.fileio import atomic_write

__all__ = [
    "ACTIVATIONS_NUM_BITS_ALLOWED",
    "SUPPORTED_SUFFIXES",
    "WEIGHTS_NUM_BITS_RANGE",
    "DeploymentSettings",
    "DistributedSettings",
    "FrozenMap",
    "GlobalQuantizationSettings",
    "LayerQuantizationSettings",
    "QuantizationAlgorithm",
    "Settings",
    "SettingsError",
    "SettingsTypeError",
    "TrainingSettings",
]

K = TypeVar("K")
V = TypeVar("V")
_T = TypeVar("_T")

#: Inclusive range of weight bit widths: targets store weights in 8-bit integer
#: containers, so anything wider than 8 has no kernel, and 1 bit has no zero point.
WEIGHTS_NUM_BITS_RANGE: tuple[int, int] = (2, 8)
#: Activation bit widths the integer kernels of the targets execute (int8, int16).
ACTIVATIONS_NUM_BITS_ALLOWED: tuple[int, ...] = (8, 16)
#: numpy's legacy seeding and most data loaders take 32-bit seeds.
_SEED_MAX = 2**32 - 1
#: File suffixes and the format each one selects.
SUPPORTED_SUFFIXES: Mapping[str, str] = {
    ".toml": "toml",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
}

Scalar = bool | int | float | str


# --------------------------------------------------------------------------- errors


class SettingsError(ValueError):
    """A setting that is not allowed, or a settings file that cannot be read.

    Attributes:
        message: What is wrong and what is allowed, without the key and path.
        key: The dotted key of the offending value (``quantization.weights_num_bits``),
            or ``None`` when the error concerns the whole document.
        path: The settings file being read or written, or ``None`` for settings
            built in Python.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.message = message
        self.key = key
        self.path = None if path is None else os.fspath(path)
        super().__init__(self._render())

    def _render(self) -> str:
        prefix = ""
        if self.path is not None:
            prefix += f"{self.path}: "
        if self.key is not None:
            prefix += f"{self.key}: "
        return prefix + self.message

    def in_context(
        self, *, prefix: str | None = None, path: str | os.PathLike[str] | None = None
    ) -> SettingsError:
        """Return a copy of this error whose key is under ``prefix`` and that names ``path``."""
        key = self.key
        if prefix is not None:
            key = prefix if key is None else f"{prefix}.{key}"
        return type(self)(self.message, key=key, path=self.path if path is None else path)


class SettingsTypeError(SettingsError, TypeError):
    """A setting of the wrong type (also a :class:`TypeError`, as Python code expects)."""


# --------------------------------------------------------------------------- FrozenMap


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable mapping that keeps insertion order.

    Settings are frozen and hashable, so their mapping fields cannot be plain dicts.
    A ``FrozenMap`` compares equal to any mapping with the same items (order ignored,
    as for ``dict``).
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(data)

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


# --------------------------------------------------------------------------- validators


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_bool(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise SettingsTypeError(
            f"must be a boolean (true or false); got {_describe(value)}", key=attr.name
        )


def _require_int(key: str, value: object) -> int:
    # bool is an int subclass, but `stats_steps = true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsTypeError(f"must be an integer; got {_describe(value)}", key=key)
    return value


def _int_range(
    lo: int, hi: int | None = None
) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value is None and attr.default is None:
            return
        number = _require_int(attr.name, value)
        if number < lo or (hi is not None and number > hi):
            allowed = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"
            raise SettingsError(f"must be {allowed}; got {number}", key=attr.name)

    return check


def _int_choice(choices: tuple[int, ...]) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value is None and attr.default is None:
            return
        number = _require_int(attr.name, value)
        if number not in choices:
            allowed = " or ".join(str(c) for c in choices)
            raise SettingsError(f"must be {allowed}; got {number}", key=attr.name)

    return check


def _to_float(value: object) -> float:
    # Files write `1` for one; accept ints where a float is wanted, but never bools.
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, float):
        return value
    raise SettingsTypeError(
        f"must be a number; got {_describe(value)}", key="sensitivity_threshold"
    )


def _check_positive_finite(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(f"must be a finite number > 0; got {value!r}", key=attr.name)


def _default_algorithms(quantization: GlobalQuantizationSettings) -> str:
    """Bias correction for post-training quantization; nothing for QAT (it trains)."""
    if quantization.quantization_algorithm is QuantizationAlgorithm.QAT:
        return ""
    return "bias-correction"


def _check_algorithms(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise SettingsTypeError(
            f"must be a pipeline spec of algorithms (a string); got {_describe(value)}",
            key=attr.name,
        )
    from acekit.quant.algorithms import split_algorithms

    try:
        split_algorithms(value)
    except (ValueError, TypeError, KeyError) as error:
        message = str(error.args[0]) if isinstance(error, KeyError) else str(error)
        raise SettingsError(message, key=attr.name) from None


def _check_optional_layer_name(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise SettingsTypeError(
            f"must be a layer name or subgraph path (a string); got {_describe(value)}",
            key=attr.name,
        )
    if not value.strip():
        raise SettingsError("must be a non-empty layer name or subgraph path", key=attr.name)


def _instance_of(cls: type) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, cls):
            raise SettingsTypeError(
                f"must be a {cls.__name__}; got {_describe(value)}", key=attr.name
            )

    return check


# --------------------------------------------------------------------------- sections


class QuantizationAlgorithm(enum.Enum):
    """How the model is quantized.

    ``PTQ`` calibrates scales on sample data and stops; ``QAT`` starts from the PTQ
    result and fine-tunes with fake quantization.  Strings are accepted wherever a
    ``QuantizationAlgorithm`` is: ``"ptq"``, ``"qat"`` or the long names, any case.
    """

    PTQ = "ptq"
    QAT = "qat"

    @property
    def title(self) -> str:
        """The long name printed in the run log (``Quantization Aware Training``)."""
        return _ALGORITHM_TITLES[self]

    @classmethod
    def _missing_(cls, value: object) -> QuantizationAlgorithm | None:
        if isinstance(value, str):
            wanted = " ".join(value.split()).casefold()
            for member in cls:
                if wanted in (member.value, member.title.casefold()):
                    return member
        return None

    @classmethod
    def parse(cls, value: object) -> QuantizationAlgorithm:
        """Convert a member, short name or long name (any case) to a member.

        Raises:
            SettingsError: naming the accepted spellings when ``value`` is none of them.
        """
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise SettingsTypeError(
                f"must be one of {_algorithm_choices()}; got {_describe(value)}",
                key="quantization_algorithm",
            )
        try:
            return cls(value)
        except ValueError:
            raise SettingsError(
                f"must be one of {_algorithm_choices()}; got {value!r}",
                key="quantization_algorithm",
            ) from None


_ALGORITHM_TITLES: dict[QuantizationAlgorithm, str] = {
    QuantizationAlgorithm.PTQ: "Post Training Quantization",
    QuantizationAlgorithm.QAT: "Quantization Aware Training",
}


def _to_algorithm(value: object) -> QuantizationAlgorithm:
    return QuantizationAlgorithm.parse(value)


def _algorithm_choices() -> str:
    return ", ".join(f"{m.value!r} ({m.title!r})" for m in QuantizationAlgorithm)


@attrs.frozen(kw_only=True)
class TrainingSettings:
    """How calibration and fine-tuning consume data.

    Attributes:
        stats_steps: Number of calibration batches the observers see (an integer >= 1).
        random_seed: Seed for torch, numpy and Python's ``random`` (0 to 2**32 - 1), so
            that two runs with the same settings and data give the same model.
        is_training_from_scratch: True when the model's weights are untrained; the
            calibration then does not rely on the float model's statistics being
            meaningful.
    """

    TITLE: ClassVar[str] = "Training Settings"

    stats_steps: int = attrs.field(default=20, validator=_int_range(1))
    random_seed: int = attrs.field(default=0, validator=_int_range(0, _SEED_MAX))
    is_training_from_scratch: bool = attrs.field(default=False, validator=_check_bool)


@attrs.frozen(kw_only=True)
class DistributedSettings:
    """How training is spread over devices.

    Attributes:
        multi_gpu: Train on all visible GPUs (data parallel).
        use_sharding: Shard parameters and optimizer state across the GPUs (FSDP-like);
            meaningful with ``multi_gpu``.
    """

    TITLE: ClassVar[str] = "Distributed Training Settings"

    multi_gpu: bool = attrs.field(default=False, validator=_check_bool)
    use_sharding: bool = attrs.field(default=False, validator=_check_bool)


@attrs.frozen(kw_only=True)
class GlobalQuantizationSettings:
    """Quantization choices for the whole model (per-layer entries override them).

    Attributes:
        quantization_algorithm: ``PTQ`` or ``QAT`` (strings accepted, see
            :class:`QuantizationAlgorithm`).
        weights_num_bits: Bit width of weights, an integer from 2 to 8.
        activations_num_bits: Bit width of activations, 8 or 16.
        skip_tail_quantization: Leave the model's last layers (from its final
            quantizable layer to the outputs) in floating point, which often protects
            the accuracy of heads for little speed.
        automatic_skip_quantization: Measure each layer's sensitivity during
            calibration and leave in floating point the layers whose error exceeds
            ``sensitivity_threshold``.
        sensitivity_threshold: The largest relative output error a layer may show when
            it alone is quantized, ``||y_q - y|| / ||y||`` on the calibration data, for
            automatic skipping to keep it quantized.  A finite number > 0; the default
            0.05 (5 %) keeps almost every layer of a well-behaved CNN or transformer.
            Used only with ``automatic_skip_quantization``.
        algorithms: Post-training algorithms the default pipeline runs around
            calibration, as a pipeline spec (``"cle,adaround{iterations=500},
            bias-correction"``; ``""`` for none). Names, options and ranges are checked
            here; see docs/algorithms.md. The default for PTQ, fast bias correction,
            measurably helps at 8 and 4 bits (docs/benchmarks.md); for QAT it is ``""``:
            training learns the biases, and a corrected start trained worse (digits W4A8
            QAT 97.96 % with it, 98.52 % without).
    """

    TITLE: ClassVar[str] = "Global Quantization Settings"

    quantization_algorithm: QuantizationAlgorithm = attrs.field(
        default=QuantizationAlgorithm.PTQ, converter=_to_algorithm
    )
    weights_num_bits: int = attrs.field(default=8, validator=_int_range(*WEIGHTS_NUM_BITS_RANGE))
    activations_num_bits: int = attrs.field(
        default=8, validator=_int_choice(ACTIVATIONS_NUM_BITS_ALLOWED)
    )
    skip_tail_quantization: bool = attrs.field(default=False, validator=_check_bool)
    automatic_skip_quantization: bool = attrs.field(default=False, validator=_check_bool)
    sensitivity_threshold: float = attrs.field(
        default=0.05, converter=_to_float, validator=_check_positive_finite
    )
    algorithms: str = attrs.field(
        default=attrs.Factory(_default_algorithms, takes_self=True), validator=_check_algorithms
    )


@attrs.frozen(kw_only=True)
class LayerQuantizationSettings:
    """Quantization choices for one layer or one subgraph, overriding the global ones.

    The key under which an entry is stored in :attr:`Settings.layers` is the user's
    node name (``conv_proj``) or a subgraph path
    (``VisionTransformer/encoder/layers/encoder_layer_0``) covering every node inside it.

    Attributes:
        skip_quantization: Leave this layer in floating point.
        skip_quantization_until: Leave this layer and every layer downstream of it in
            floating point until the named layer, which is quantized again.
        skip_quantization_downstream: Leave this layer and everything downstream of it,
            to the model's outputs, in floating point.
        weights_num_bits: Override of the global weight bit width (2 to 8), or ``None``.
        activations_num_bits: Override of the global activation bit width (8 or 16), or
            ``None``.

    The three skip options are exclusive of each other and of bit-width overrides:
    a skipped layer has no bit width.
    """

    skip_quantization: bool = attrs.field(default=False, validator=_check_bool)
    skip_quantization_until: str | None = attrs.field(
        default=None, validator=_check_optional_layer_name
    )
    skip_quantization_downstream: bool = attrs.field(default=False, validator=_check_bool)
    weights_num_bits: int | None = attrs.field(
        default=None, validator=_int_range(*WEIGHTS_NUM_BITS_RANGE)
    )
    activations_num_bits: int | None = attrs.field(
        default=None, validator=_int_choice(ACTIVATIONS_NUM_BITS_ALLOWED)
    )

    def __attrs_post_init__(self) -> None:
        skips = [
            name
            for name, on in (
                ("skip_quantization", self.skip_quantization),
                ("skip_quantization_until", self.skip_quantization_until is not None),
                ("skip_quantization_downstream", self.skip_quantization_downstream),
            )
            if on
        ]
        if len(skips) > 1:
            raise SettingsError(
                f"{' and '.join(skips)} are exclusive; set only one of them "
                "(skip_quantization_until already skips downstream, up to the named layer)",
                key=skips[1],
            )
        bits = [
            name
            for name in ("weights_num_bits", "activations_num_bits")
            if getattr(self, name) is not None
        ]
        if skips and bits:
            raise SettingsError(
                f"cannot be set together with {skips[0]}: a skipped layer stays in "
                "floating point and has no bit width",
                key=bits[0],
            )

    @property
    def is_skipped(self) -> bool:
        """Whether this entry leaves its layer in floating point."""
        return (
            self.skip_quantization
            or self.skip_quantization_downstream
            or self.skip_quantization_until is not None
        )


def _installed_targets() -> Mapping[str, str]:
    """Return the installed deployment targets as ``{name: title}``.

    Imported lazily: the registry loads plugins, which must never happen at
    ``import acekit.settings``.  Tests replace this function with a fixed mapping.
    """
    from acekit.plugin import get_registry

    targets: Mapping[str, Any] = get_registry().targets
    return {name: str(getattr(target, "title", name)) for name, target in targets.items()}


def _check_target(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise SettingsTypeError(
            f"must be the name of an installed target (a string); got {_describe(value)}",
            key=attr.name,
        )
    installed = _installed_targets()
    if value in installed:
        return
    disabled = _disabled_target_hint(value)
    if disabled:
        raise SettingsError(f"{value!r} {disabled}", key=attr.name)
    if not installed:
        raise SettingsError(
            f"{value!r} is not an installed target, and no target plugin is installed "
            "(install one, e.g. acekit's built-in 'onnxruntime' target)",
            key=attr.name,
        )
    listing = ", ".join(f"{name!r} ({title})" for name, title in sorted(installed.items()))
    close = difflib.get_close_matches(value, list(installed), n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise SettingsError(
        f"{value!r} is not an installed target.{hint} Installed targets: {listing}",
        key=attr.name,
    )


def _disabled_target_hint(name: str) -> str:
    """How target ``name`` may be disabled by ``ACEKIT_DISABLE_PLUGINS`` (``""``: it is not)."""
    from acekit.quant.targets import disabled_hint

    return disabled_hint(name)


def _validated_target_options(target: str, options: Mapping[str, Scalar]) -> None:
    """Check ``options`` with the installed target ``target``'s own validation.

    Skipped when ``target`` is not in the plugin registry (tests that replace
    :func:`_installed_targets` name targets that no plugin registered).
    """
    from acekit.plugin import get_registry
    from acekit.quant.options import TargetOptionError
    from acekit.quant.targets import validate_target_options

    registered = get_registry().targets.get(target)
    if registered is None:
        return
    try:
        validate_target_options(registered, options)
    except TargetOptionError as error:
        key = "target_options" + (f".{error.option}" if error.option is not None else "")
        raise SettingsError(f"{error.message} (target {target!r})", key=key) from None


def _to_target_options(value: object) -> FrozenMap[str, Scalar]:
    if not isinstance(value, Mapping):
        raise SettingsTypeError(
            f"must be a mapping of option names to values; got {_describe(value)}",
            key="target_options",
        )
    for name, option in value.items():
        if not isinstance(name, str):
            raise SettingsTypeError(
                f"option names must be strings; got {_describe(name)}", key="target_options"
            )
        if not isinstance(option, bool | int | float | str):
            raise SettingsTypeError(
                "must be a boolean, integer, number or string; got " + _describe(option),
                key=f"target_options.{name}",
            )
        # NaN never equals itself and JSON cannot write it: a round trip would break.
        if isinstance(option, float) and not math.isfinite(option):
            raise SettingsError(
                f"must be a finite number; got {option!r}", key=f"target_options.{name}"
            )
    return value if isinstance(value, FrozenMap) else FrozenMap(value)


@attrs.frozen(kw_only=True)
class DeploymentSettings:
    """Where the quantized model is deployed.

    Attributes:
        target_framework: Name of an installed target plugin (``onnxruntime``, ...);
            the error for an unknown name lists the installed ones.
        target_options: Options passed to the target plugin, a mapping of names to
            booleans, integers, finite numbers or strings; the target defines which it
            reads and checks them here (unknown names, types, ranges).
    """

    TITLE: ClassVar[str] = "Deployment Settings"

    target_framework: str = attrs.field(default="onnxruntime", validator=_check_target)
    target_options: Mapping[str, Scalar] = attrs.field(
        factory=FrozenMap, converter=_to_target_options
    )

    def __attrs_post_init__(self) -> None:
        # The target knows its options: a wrong one fails here, not inside an export.
        _validated_target_options(self.target_framework, self.target_options)


def _to_layers(value: object) -> FrozenMap[str, LayerQuantizationSettings]:
    if not isinstance(value, Mapping):
        raise SettingsTypeError(
            "must be a mapping of layer names to LayerQuantizationSettings; got "
            + _describe(value),
            key="layers",
        )
    for name, layer in value.items():
        if not isinstance(name, str) or not name.strip():
            raise SettingsTypeError(
                f"keys must be non-empty layer names or subgraph paths; got {_describe(name)}",
                key="layers",
            )
        if not isinstance(layer, LayerQuantizationSettings):
            raise SettingsTypeError(
                f"must be a LayerQuantizationSettings; got {_describe(layer)}",
                key=f"layers.{_quote_key(name)}",
            )
        if layer.skip_quantization_until == name:
            raise SettingsError(
                "skip_quantization_until names the layer itself; name a layer downstream",
                key=f"layers.{_quote_key(name)}.skip_quantization_until",
            )
    return value if isinstance(value, FrozenMap) else FrozenMap(value)


# --------------------------------------------------------------------------- Settings

# Section name in files and on the Settings object -> its class.  Order is file order.
_SECTIONS: dict[str, type] = {
    "training": TrainingSettings,
    "distributed": DistributedSettings,
    "quantization": GlobalQuantizationSettings,
    "deployment": DeploymentSettings,
}
_LAYERS_KEY = "layers"
_LAYERS_TITLE = "Layer Quantization Settings"


@attrs.frozen(kw_only=True)
class Settings:
    """All the settings of an acekit run.

    ``Settings()`` is a working default: post-training quantization to 8-bit weights and
    activations, 20 calibration steps, deployed to ONNX Runtime.  Give sections by
    keyword and change them with :func:`attrs.evolve`.

    Attributes:
        training: :class:`TrainingSettings`.
        distributed: :class:`DistributedSettings`.
        quantization: :class:`GlobalQuantizationSettings`.
        layers: Per-layer overrides, ``{layer name or subgraph path:
            LayerQuantizationSettings}``; immutable (a :class:`FrozenMap`), any mapping
            is accepted.  A top-level section rather than part of ``quantization`` so
            that files keep one flat ``[layers."name"]`` table per layer.
        deployment: :class:`DeploymentSettings`.
    """

    training: TrainingSettings = attrs.field(
        factory=TrainingSettings, validator=_instance_of(TrainingSettings)
    )
    distributed: DistributedSettings = attrs.field(
        factory=DistributedSettings, validator=_instance_of(DistributedSettings)
    )
    quantization: GlobalQuantizationSettings = attrs.field(
        factory=GlobalQuantizationSettings, validator=_instance_of(GlobalQuantizationSettings)
    )
    layers: Mapping[str, LayerQuantizationSettings] = attrs.field(
        factory=FrozenMap, converter=_to_layers
    )
    deployment: DeploymentSettings = attrs.field(
        factory=DeploymentSettings, validator=_instance_of(DeploymentSettings)
    )

    # ----------------------------------------------------------------- dict form

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as plain data (dicts, strings, numbers, booleans).

        Top-level sections list every field; a layer entry lists only the fields that
        differ from their defaults; ``None`` values are left out because TOML has no
        null.  :meth:`from_dict` reads the result back to an equal ``Settings``.
        """
        data: dict[str, Any] = {}
        for name in _SECTIONS:
            section = _section_to_dict(getattr(self, name))
            if name == "deployment" and not section["target_options"]:
                del section["target_options"]
            data[name] = section
            if name == "quantization" and self.layers:
                data[_LAYERS_KEY] = {
                    layer: _section_to_dict(entry, only_changed=True)
                    for layer, entry in self.layers.items()
                }
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str | os.PathLike[str] | None = None
    ) -> Settings:
        """Build settings from plain data as written by :meth:`to_dict`.

        Missing sections and keys take their defaults.  ``source`` names the file the
        data came from, for error messages.

        Raises:
            SettingsError: for an unknown key (with close matches and the valid keys),
                a value of the wrong type, or a value that is not allowed; the message
                names the dotted key and ``source``.
        """
        try:
            _require_table(data, None)
            _reject_unknown(data, [*_SECTIONS, _LAYERS_KEY], None)
            kwargs: dict[str, Any] = {}
            for name, section_cls in _SECTIONS.items():
                if name in data:
                    kwargs[name] = _section_from_dict(section_cls, data[name], name)
            if _LAYERS_KEY in data:
                kwargs[_LAYERS_KEY] = _layers_from_dict(data[_LAYERS_KEY])
            # Section errors already carry their dotted keys; so do those of `layers`.
            return cls(**kwargs)
        except SettingsError as exc:
            if source is None:
                raise
            raise exc.in_context(path=source) from None

    # ----------------------------------------------------------------- files

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Settings:
        """Load settings from a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file.

        Raises:
            SettingsError: for an unsupported extension, a file that is missing, cannot
                be read, is not UTF-8 text or does not parse, or content
                :meth:`from_dict` rejects; the message names the file and the fix.
        """
        path = Path(path)
        fmt = _format_for(path)
        return cls.from_dict(_load_text(_read_text(path), fmt, source=path), source=path)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the settings to ``path`` in the format its extension selects.

        The file is written through :func:`acekit.fileio.atomic_write`: a reader never
        sees half a file, a failed write leaves any previous file intact, the new file
        gets the umask's mode (an overwritten one keeps its own), and temporaries left by
        killed processes are cleaned up.  Returns ``path`` as a :class:`~pathlib.Path`.

        Raises:
            SettingsError: for an unsupported extension (nothing is written).
            OSError: when the directory is missing or not writable.
        """
        path = Path(path)
        text = _dump_text(self.to_dict(), _format_for(path), path=path)
        atomic_write(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))
        return path

    # ----------------------------------------------------------------- run log

    def format(self) -> str:
        """Return the settings in the run log's layout.

        One block per section, a title line then ``+ key = value`` lines, blocks
        separated by a blank line.  The algorithm and the target are printed by their
        titles (a target that is not installed by its name); the per-layer block appears
        only when there are layer entries.
        """
        installed = _installed_targets_quietly()
        blocks = [
            _format_block(TrainingSettings.TITLE, _section_lines(self.training)),
            _format_block(DistributedSettings.TITLE, _section_lines(self.distributed)),
            _format_block(GlobalQuantizationSettings.TITLE, _section_lines(self.quantization)),
        ]
        if self.layers:
            blocks.append(_format_block(_LAYERS_TITLE, _layer_lines(self.layers)))
        target = self.deployment.target_framework
        deployment = [f"target_framework = {installed.get(target, target)}"]
        deployment += [
            f"target_options.{name} = {_format_value(value)}"
            for name, value in self.deployment.target_options.items()
        ]
        blocks.append(_format_block(DeploymentSettings.TITLE, deployment))
        return "\n\n".join(blocks)


# --------------------------------------------------------------------------- helpers


def _quote_key(name: str) -> str:
    """Quote a layer name inside a dotted key, as TOML would (names hold '/' and '.')."""
    return json.dumps(name, ensure_ascii=False)


def _section_to_dict(section: Any, *, only_changed: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in attrs.fields(type(section)):
        value = getattr(section, field.name)
        if value is None:
            continue
        if only_changed and value == field.default:
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, Mapping):
            value = dict(value)
        out[field.name] = value
    return out


def _require_table(value: object, key: str | None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        what = "the settings document" if key is None else f"section [{key}]"
        raise SettingsTypeError(
            f"{what} must be a table (mapping of keys to values); got {_describe(value)}",
            key=key,
        )
    return value


def _reject_unknown(data: Mapping[str, Any], valid: list[str], prefix: str | None) -> None:
    for key in data:
        if key in valid:
            continue
        dotted = str(key) if prefix is None else f"{prefix}.{key}"
        close = difflib.get_close_matches(str(key), valid, n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        where = "at the top level" if prefix is None else f"in [{prefix}]"
        raise SettingsError(
            f"unknown key; {hint}Valid keys {where}: {', '.join(valid)}", key=dotted
        )


def _section_from_dict(section_cls: type[_T], value: object, prefix: str) -> _T:
    table = _require_table(value, prefix)
    _reject_unknown(table, [f.name for f in attrs.fields(section_cls)], prefix)  # type: ignore[arg-type]
    try:
        return section_cls(**table)
    except SettingsError as exc:
        raise exc.in_context(prefix=prefix) from None


def _layers_from_dict(value: object) -> dict[str, LayerQuantizationSettings]:
    table = _require_table(value, _LAYERS_KEY)
    return {
        name: _section_from_dict(
            LayerQuantizationSettings, entry, f"{_LAYERS_KEY}.{_quote_key(name)}"
        )
        for name, entry in table.items()
    }


def _format_for(path: Path) -> str:
    fmt = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise SettingsError(
            f"unsupported settings file extension {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}",
            path=path,
        )
    return fmt


def _read_text(path: Path) -> str:
    """The text of settings file ``path``; every way reading it fails is a SettingsError."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError("no such settings file; check the path", path=path) from None
    except IsADirectoryError:
        raise SettingsError("is a directory; give a settings file", path=path) from None
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8",
            path=path,
        ) from None
    except OSError as exc:
        raise SettingsError(f"cannot be read: {exc.strerror or exc}", path=path) from None


def _load_text(text: str, fmt: str, *, source: str | os.PathLike[str] | None = None) -> Any:
    """Parse ``text`` in format ``fmt`` ('toml', 'yaml' or 'json') into plain data."""
    try:
        if fmt == "toml":
            return tomllib.loads(text)
        if fmt == "yaml":
            # An empty YAML document is None; treat it like an empty TOML file.
            loaded = yaml.safe_load(text)
            return {} if loaded is None else loaded
        if fmt == "json":
            return json.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise SettingsError(f"not valid {fmt.upper()}: {exc}", path=source) from None
    raise SettingsError(f"unknown settings format {fmt!r}", path=source)


def _dump_text(
    data: Mapping[str, Any], fmt: str, *, path: str | os.PathLike[str] | None = None
) -> str:
    """Serialize plain ``data`` in format ``fmt`` ('toml', 'yaml' or 'json').

    The text is parsed back and compared with ``data``, so that a value the format's
    writer would alter (PyYAML turns U+0085 in keys into a line break) is refused
    instead of being saved wrongly.
    """
    if fmt == "toml":
        text = tomli_w.dumps(data)
    elif fmt == "yaml":
        text = str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    elif fmt == "json":
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        raise SettingsError(f"unknown settings format {fmt!r}", path=path)
    if _load_text(text, fmt, source=path) != data:
        raise SettingsError(
            f"these settings cannot be written losslessly as {fmt.upper()} (a name or "
            "string holds characters its writer changes); use another format, e.g. .json",
            path=path,
        )
    return text


def _installed_targets_quietly() -> Mapping[str, str]:
    # Printing must not fail because the registry does; the name is printed instead.
    try:
        return _installed_targets()
    except Exception:
        return {}


def _format_value(value: object) -> str:
    if isinstance(value, QuantizationAlgorithm):
        return value.title
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _section_lines(section: Any) -> list[str]:
    return [
        f"{field.name} = {_format_value(getattr(section, field.name))}"
        for field in attrs.fields(type(section))
    ]


def _layer_lines(layers: Mapping[str, LayerQuantizationSettings]) -> list[str]:
    lines = []
    for name, entry in layers.items():
        changed = _section_to_dict(entry, only_changed=True)
        body = ", ".join(f"{k} = {_format_value(v)}" for k, v in changed.items())
        lines.append(f"{name!r}: {body or '(no overrides)'}")
    return lines


def _format_block(title: str, lines: list[str]) -> str:
    return "\n".join([f"{title}:", *(f"+ {line}" for line in lines)])
