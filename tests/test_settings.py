"""Tests of acekit.settings: defaults, validation, files, the run-log layout."""

from __future__ import annotations

import math
import os
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import acekit.settings as settings_module
from acekit.settings import (
    DeploymentSettings,
    DistributedSettings,
    FrozenMap,
    GlobalQuantizationSettings,
    LayerQuantizationSettings,
    QuantizationAlgorithm,
    Settings,
    SettingsError,
    SettingsTypeError,
    TrainingSettings,
)

FAKE_TARGETS = {"onnxruntime": "ONNX Runtime (CPU)", "tensorrt": "TensorRT (NVIDIA)"}


@pytest.fixture(autouse=True)
def fake_targets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Pin the installed targets so these tests never depend on the plugins present."""
    targets = dict(FAKE_TARGETS)
    monkeypatch.setattr(settings_module, "_installed_targets", lambda: targets)
    # The fakes accept any options (the real targets' checks have tests of their own).
    monkeypatch.setattr(settings_module, "_validated_target_options", lambda *_: None)
    return targets


def seed_like() -> Settings:
    """The settings of the seed log (CLIKA ACE's ViT-B/16 run)."""
    return Settings(
        training=TrainingSettings(stats_steps=20, random_seed=1534438726),
        distributed=DistributedSettings(multi_gpu=True, use_sharding=True),
        quantization=GlobalQuantizationSettings(
            quantization_algorithm=QuantizationAlgorithm.QAT,
            automatic_skip_quantization=True,
        ),
        deployment=DeploymentSettings(target_framework="tensorrt"),
    )


def rich() -> Settings:
    """Settings that exercise every kind of value, per-layer entries included."""
    return attrs.evolve(
        seed_like(),
        layers={
            "conv_proj": LayerQuantizationSettings(skip_quantization=True),
            "VisionTransformer/encoder/layers/encoder_layer_11": LayerQuantizationSettings(
                weights_num_bits=4, activations_num_bits=16
            ),
            "encoder.ln": LayerQuantizationSettings(skip_quantization_until="heads_head"),
            "heads_head": LayerQuantizationSettings(skip_quantization_downstream=True),
            "plain": LayerQuantizationSettings(),
        },
        deployment=DeploymentSettings(
            target_framework="tensorrt",
            target_options={"fp16": True, "workspace_mb": 1024, "scale": 0.5, "tag": "x"},
        ),
    )


# --------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    s = Settings()
    assert s.training == TrainingSettings(stats_steps=20, random_seed=0)
    assert not s.training.is_training_from_scratch
    assert s.distributed == DistributedSettings(multi_gpu=False, use_sharding=False)
    q = s.quantization
    assert q.quantization_algorithm is QuantizationAlgorithm.PTQ
    assert (q.weights_num_bits, q.activations_num_bits) == (8, 8)
    assert not q.skip_tail_quantization and not q.automatic_skip_quantization
    assert q.sensitivity_threshold == 0.05
    assert s.layers == {}
    assert s.deployment.target_framework == "onnxruntime"
    assert s.deployment.target_options == {}


def test_import_loads_no_plugins() -> None:
    code = (
        "import sys, acekit.settings; "
        "print(sorted(m for m in sys.modules if m.startswith('acekit_')))"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert out.stdout.strip() == "[]"


def test_keyword_sections_and_evolve() -> None:
    s = Settings(quantization=GlobalQuantizationSettings(weights_num_bits=4))
    assert s.quantization.weights_num_bits == 4
    s2 = attrs.evolve(s, deployment=DeploymentSettings(target_framework="tensorrt"))
    assert s2.deployment.target_framework == "tensorrt"
    assert s2.quantization.weights_num_bits == 4
    assert s.deployment.target_framework == "onnxruntime"
    s3 = attrs.evolve(s2, quantization=attrs.evolve(s2.quantization, activations_num_bits=16))
    assert s3.quantization.activations_num_bits == 16


def test_frozen_and_hashable() -> None:
    s = rich()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.training = TrainingSettings()  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.layers["new"] = LayerQuantizationSettings()  # type: ignore[index]
    assert hash(s) == hash(rich())
    assert len({s, rich()}) == 1


def test_layers_accept_any_mapping_and_compare_with_dicts() -> None:
    entry = LayerQuantizationSettings(weights_num_bits=4)
    s = Settings(layers={"a": entry})
    assert isinstance(s.layers, FrozenMap)
    assert s.layers == {"a": entry}
    assert Settings(layers=FrozenMap([("a", entry)])) == s
    assert Settings(layers=types.MappingProxyType({"a": entry})) == s


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bits", [0, 1, 9, 16, -8])
def test_bad_weight_bits_say_what_is_allowed(bits: int) -> None:
    with pytest.raises(SettingsError, match=r"weights_num_bits: must be an integer from 2 to 8"):
        GlobalQuantizationSettings(weights_num_bits=bits)


@pytest.mark.parametrize("bits", [2, 4, 7, 32])
def test_bad_activation_bits_say_what_is_allowed(bits: int) -> None:
    with pytest.raises(SettingsError, match=r"activations_num_bits: must be 8 or 16; got"):
        GlobalQuantizationSettings(activations_num_bits=bits)


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (TrainingSettings, "stats_steps", True),
        (TrainingSettings, "stats_steps", 2.0),
        (TrainingSettings, "random_seed", "7"),
        (TrainingSettings, "is_training_from_scratch", 1),
        (DistributedSettings, "multi_gpu", "yes"),
        (GlobalQuantizationSettings, "weights_num_bits", 8.0),
        (GlobalQuantizationSettings, "sensitivity_threshold", "0.1"),
        (GlobalQuantizationSettings, "sensitivity_threshold", True),
        (GlobalQuantizationSettings, "quantization_algorithm", 1),
        (DeploymentSettings, "target_framework", 3),
        (DeploymentSettings, "target_options", [("a", 1)]),
        (LayerQuantizationSettings, "skip_quantization_until", 5),
    ],
)
def test_wrong_types_are_type_errors(cls: type, field: str, value: object) -> None:
    with pytest.raises(SettingsTypeError, match=field) as info:
        cls(**{field: value})
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("cls", "kwargs", "pattern"),
    [
        (TrainingSettings, {"stats_steps": 0}, r"stats_steps: must be an integer >= 1; got 0"),
        (TrainingSettings, {"random_seed": -1}, r"from 0 to 4294967295"),
        (TrainingSettings, {"random_seed": 2**32}, r"from 0 to 4294967295"),
        (GlobalQuantizationSettings, {"sensitivity_threshold": 0}, r"finite number > 0"),
        (GlobalQuantizationSettings, {"sensitivity_threshold": math.inf}, r"finite number > 0"),
        (GlobalQuantizationSettings, {"sensitivity_threshold": math.nan}, r"finite number > 0"),
        (DeploymentSettings, {"target_options": {"x": math.nan}}, r"target_options\.x: .*finite"),
    ],
)
def test_values_out_of_range(cls: type, kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(SettingsError, match=pattern):
        cls(**kwargs)


def test_int_accepted_for_float_threshold() -> None:
    q = GlobalQuantizationSettings(sensitivity_threshold=1)
    assert q.sensitivity_threshold == 1.0 and isinstance(q.sensitivity_threshold, float)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ptq", QuantizationAlgorithm.PTQ),
        ("QAT", QuantizationAlgorithm.QAT),
        ("Post Training Quantization", QuantizationAlgorithm.PTQ),
        ("quantization  aware training", QuantizationAlgorithm.QAT),
        (QuantizationAlgorithm.QAT, QuantizationAlgorithm.QAT),
    ],
)
def test_algorithm_accepts_short_and_long_names(text: Any, expected: QuantizationAlgorithm) -> None:
    assert (
        GlobalQuantizationSettings(quantization_algorithm=text).quantization_algorithm is expected
    )


def test_bad_algorithm_lists_choices() -> None:
    with pytest.raises(SettingsError) as info:
        GlobalQuantizationSettings(quantization_algorithm="awq")
    message = str(info.value)
    assert message.startswith("quantization_algorithm: ")
    for word in ("'ptq'", "'qat'", "Post Training Quantization", "Quantization Aware Training"):
        assert word in message
    assert "'awq'" in message


def test_unknown_target_lists_installed_targets() -> None:
    with pytest.raises(SettingsError) as info:
        DeploymentSettings(target_framework="tensorrtt")
    message = str(info.value)
    assert message.startswith("target_framework: 'tensorrtt' is not an installed target.")
    assert "Did you mean 'tensorrt'?" in message
    assert "'onnxruntime' (ONNX Runtime (CPU))" in message
    assert "'tensorrt' (TensorRT (NVIDIA))" in message


def test_unknown_target_with_no_targets_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "_installed_targets", lambda: {})
    with pytest.raises(SettingsError, match="no target plugin is installed"):
        Settings()


def test_installed_targets_reads_the_plugin_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real lookup, against the registry interface (names and titles)."""
    monkeypatch.undo()  # the autouse fake replaced the function under test
    target = types.SimpleNamespace(name="tensorrt", title="TensorRT (NVIDIA)")
    registry = types.SimpleNamespace(targets={"tensorrt": target})
    fake = types.ModuleType("acekit.plugin")
    fake.get_registry = lambda: registry  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "acekit.plugin", fake)
    assert settings_module._installed_targets() == {"tensorrt": "TensorRT (NVIDIA)"}
    with pytest.raises(SettingsError, match=r"Installed targets: 'tensorrt' \(TensorRT"):
        DeploymentSettings(target_framework="onnxruntime")


def test_builtin_target_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the real registry: the built-in ONNX Runtime target backs the default."""
    monkeypatch.undo()
    installed = settings_module._installed_targets()
    assert "onnxruntime" in installed
    assert all(isinstance(title, str) and title for title in installed.values())
    assert Settings().deployment.target_framework == "onnxruntime"


def test_layer_skip_options_are_exclusive() -> None:
    with pytest.raises(SettingsError, match="are exclusive"):
        LayerQuantizationSettings(skip_quantization=True, skip_quantization_downstream=True)
    with pytest.raises(SettingsError, match="are exclusive"):
        LayerQuantizationSettings(skip_quantization=True, skip_quantization_until="x")
    with pytest.raises(SettingsError, match="no bit width"):
        LayerQuantizationSettings(skip_quantization_downstream=True, activations_num_bits=16)
    with pytest.raises(SettingsError, match="non-empty"):
        LayerQuantizationSettings(skip_quantization_until="  ")


def test_layer_bits_are_validated_like_global_ones() -> None:
    with pytest.raises(SettingsError, match="weights_num_bits: must be an integer from 2 to 8"):
        LayerQuantizationSettings(weights_num_bits=12)
    with pytest.raises(SettingsError, match="activations_num_bits: must be 8 or 16"):
        LayerQuantizationSettings(activations_num_bits=4)


def test_layers_mapping_is_validated() -> None:
    with pytest.raises(
        SettingsTypeError, match=r'layers\."a": must be a LayerQuantizationSettings'
    ):
        Settings(layers={"a": {"skip_quantization": True}})
    with pytest.raises(SettingsTypeError, match="non-empty layer names"):
        Settings(layers={"": LayerQuantizationSettings()})
    with pytest.raises(SettingsError, match="names the layer itself"):
        Settings(layers={"a": LayerQuantizationSettings(skip_quantization_until="a")})


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".yml", ".json", ".TOML"])
def test_file_round_trip(tmp_path: Path, suffix: str) -> None:
    s = rich()
    path = s.save(tmp_path / f"settings{suffix}")
    assert path == tmp_path / f"settings{suffix}"
    loaded = Settings.from_file(path)
    assert loaded == s
    assert list(loaded.layers) == list(s.layers)
    assert loaded.quantization.quantization_algorithm is QuantizationAlgorithm.QAT
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_default_round_trip_and_str_paths(tmp_path: Path) -> None:
    path = str(tmp_path / "s.toml")
    Settings().save(path)
    assert Settings.from_file(path) == Settings()


def test_toml_layout_is_readable(tmp_path: Path) -> None:
    text = rich().save(tmp_path / "s.toml").read_text(encoding="utf-8")
    assert '[quantization]\nquantization_algorithm = "qat"\n' in text
    assert "[layers.conv_proj]\nskip_quantization = true\n" in text
    assert '[layers."VisionTransformer/encoder/layers/encoder_layer_11"]' in text
    assert "[deployment.target_options]" in text


def test_partial_and_empty_files_take_defaults(tmp_path: Path) -> None:
    (tmp_path / "empty.toml").write_text("", encoding="utf-8")
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    (tmp_path / "part.toml").write_text(
        '[quantization]\nquantization_algorithm = "Quantization Aware Training"\n'
        "weights_num_bits = 4\n",
        encoding="utf-8",
    )
    assert Settings.from_file(tmp_path / "empty.toml") == Settings()
    assert Settings.from_file(tmp_path / "empty.yaml") == Settings()
    part = Settings.from_file(tmp_path / "part.toml")
    assert part.quantization == GlobalQuantizationSettings(
        quantization_algorithm="qat", weights_num_bits=4
    )
    assert part.training == TrainingSettings()


def _error_for(tmp_path: Path, name: str, text: str) -> SettingsError:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        Settings.from_file(path)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ")
    return info.value


def test_unknown_key_names_key_file_and_close_match(tmp_path: Path) -> None:
    error = _error_for(tmp_path, "s.toml", "[quantization]\nweigths_num_bits = 4\n")
    assert error.key == "quantization.weigths_num_bits"
    message = str(error)
    assert "unknown key" in message
    assert "did you mean 'weights_num_bits'" in message
    assert "Valid keys in [quantization]: quantization_algorithm, weights_num_bits" in message


def test_unknown_section_and_layer_key(tmp_path: Path) -> None:
    error = _error_for(tmp_path, "s.yaml", "trainig:\n  stats_steps: 3\n")
    assert error.key == "trainig"
    assert "did you mean 'training'" in str(error)
    assert "Valid keys at the top level: training, distributed" in str(error)
    error = _error_for(tmp_path, "l.json", '{"layers": {"a/b": {"skip_quantisation": true}}}')
    assert error.key == 'layers."a/b".skip_quantisation'
    assert "did you mean 'skip_quantization'" in str(error)


def test_wrong_type_in_file(tmp_path: Path) -> None:
    error = _error_for(tmp_path, "s.toml", '[quantization]\nweights_num_bits = "8"\n')
    assert isinstance(error, SettingsTypeError)
    assert error.key == "quantization.weights_num_bits"
    assert "must be an integer; got str '8'" in str(error)
    error = _error_for(tmp_path, "t.json", '{"training": [1, 2]}')
    assert error.key == "training"
    assert "must be a table" in str(error)
    error = _error_for(tmp_path, "u.yaml", "- 1\n- 2\n")
    assert error.key is None
    assert "settings document must be a table" in str(error)


def test_bad_value_in_file(tmp_path: Path) -> None:
    error = _error_for(tmp_path, "s.yaml", "quantization:\n  activations_num_bits: 4\n")
    assert error.key == "quantization.activations_num_bits"
    assert "must be 8 or 16; got 4" in str(error)
    error = _error_for(tmp_path, "d.toml", '[deployment]\ntarget_framework = "tensorrtt"\n')
    assert error.key == "deployment.target_framework"
    assert "Installed targets: 'onnxruntime' (ONNX Runtime (CPU))" in str(error)
    error = _error_for(tmp_path, "l.toml", '[layers.a]\nskip_quantization_until = "a"\n')
    assert error.key == 'layers."a".skip_quantization_until'


def test_unparsable_file(tmp_path: Path) -> None:
    assert "not valid TOML" in str(_error_for(tmp_path, "s.toml", "[training\n"))
    assert "not valid JSON" in str(_error_for(tmp_path, "s.json", "{"))
    assert "not valid YAML" in str(_error_for(tmp_path, "s.yaml", "a: [1\n"))


def test_unsupported_extension(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"unsupported settings file extension '\.ini'"):
        Settings().save(tmp_path / "s.ini")
    with pytest.raises(SettingsError, match=r"use one of \.toml, \.yaml, \.yml, \.json"):
        Settings.from_file(tmp_path / "settings")
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Settings().save(tmp_path / "s.json")
    before = path.read_text(encoding="utf-8")

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        rich().save(path)
    assert path.read_text(encoding="utf-8") == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_save_overwrites_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    Settings().save(path)
    os.chmod(path, 0o640)
    rich().save(path)
    assert Settings.from_file(path) == rich()
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o640


def test_save_into_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Settings().save(tmp_path / "missing" / "s.toml")


# --------------------------------------------------------------------------- format

SEED_BLOCK = """\
Training Settings:
+ stats_steps = 20
+ random_seed = 1534438726
+ is_training_from_scratch = False

Distributed Training Settings:
+ multi_gpu = True
+ use_sharding = True

Global Quantization Settings:
+ quantization_algorithm = Quantization Aware Training
+ weights_num_bits = 8
+ activations_num_bits = 8
+ skip_tail_quantization = False
+ automatic_skip_quantization = True
+ sensitivity_threshold = 0.05
+ algorithms = ''

Deployment Settings:
+ target_framework = TensorRT (NVIDIA)"""


def test_format_matches_the_seed_layout() -> None:
    assert seed_like().format() == SEED_BLOCK


def test_format_with_layers_options_and_uninstalled_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = rich().format()
    assert (
        "Layer Quantization Settings:\n"
        "+ 'conv_proj': skip_quantization = True\n"
        "+ 'VisionTransformer/encoder/layers/encoder_layer_11': "
        "weights_num_bits = 4, activations_num_bits = 16\n"
        "+ 'encoder.ln': skip_quantization_until = 'heads_head'\n"
        "+ 'heads_head': skip_quantization_downstream = True\n"
        "+ 'plain': (no overrides)\n\n"
        "Deployment Settings:\n"
        "+ target_framework = TensorRT (NVIDIA)\n"
        "+ target_options.fp16 = True\n"
        "+ target_options.workspace_mb = 1024\n"
        "+ target_options.scale = 0.5\n"
        "+ target_options.tag = 'x'"
    ) in text
    # A target whose plugin went away since construction prints by its name.
    seed = seed_like()
    monkeypatch.setattr(settings_module, "_installed_targets", lambda: {})
    assert seed.format().endswith("+ target_framework = tensorrt")


# --------------------------------------------------------------------------- property

_names = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="/._-: "),
    min_size=1,
    max_size=30,
).filter(lambda s: s.strip() != "")
_bits_w = st.integers(2, 8)
_bits_a = st.sampled_from([8, 16])


@st.composite
def _layer_entries(draw: st.DrawFn) -> LayerQuantizationSettings:
    kind = draw(st.sampled_from(["bits", "skip", "until", "downstream"]))
    if kind == "skip":
        return LayerQuantizationSettings(skip_quantization=True)
    if kind == "until":
        return LayerQuantizationSettings(skip_quantization_until=draw(_names))
    if kind == "downstream":
        return LayerQuantizationSettings(skip_quantization_downstream=True)
    return LayerQuantizationSettings(
        weights_num_bits=draw(st.none() | _bits_w),
        activations_num_bits=draw(st.none() | _bits_a),
    )


_scalars = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)

_settings = st.builds(
    Settings,
    training=st.builds(
        TrainingSettings,
        stats_steps=st.integers(1, 10**6),
        random_seed=st.integers(0, 2**32 - 1),
        is_training_from_scratch=st.booleans(),
    ),
    distributed=st.builds(DistributedSettings, multi_gpu=st.booleans(), use_sharding=st.booleans()),
    quantization=st.builds(
        GlobalQuantizationSettings,
        quantization_algorithm=st.sampled_from(QuantizationAlgorithm),
        weights_num_bits=_bits_w,
        activations_num_bits=_bits_a,
        skip_tail_quantization=st.booleans(),
        automatic_skip_quantization=st.booleans(),
        sensitivity_threshold=st.floats(min_value=1e-9, max_value=1e9),
    ),
    layers=st.dictionaries(_names, _layer_entries(), max_size=4).filter(
        lambda d: all(v.skip_quantization_until != k for k, v in d.items())
    ),
    deployment=st.builds(
        DeploymentSettings,
        target_framework=st.sampled_from(sorted(FAKE_TARGETS)),
        target_options=st.dictionaries(st.text(min_size=1, max_size=8), _scalars, max_size=3),
    ),
)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s=_settings, fmt=st.sampled_from(["toml", "yaml", "json"]))
def test_round_trip_property(s: Settings, fmt: str) -> None:
    try:
        text = settings_module._dump_text(s.to_dict(), fmt)
    except SettingsError as exc:
        # Only PyYAML is known to mangle some characters; it must be refused, loudly.
        assert fmt == "yaml" and "cannot be written losslessly" in str(exc)
        return
    data: Mapping[str, Any] = settings_module._load_text(text, fmt)
    assert Settings.from_dict(data) == s


def test_lossy_yaml_is_refused(tmp_path: Path) -> None:
    s = Settings(deployment=DeploymentSettings(target_options={"\x85": False}))
    with pytest.raises(SettingsError, match="cannot be written losslessly as YAML"):
        s.save(tmp_path / "s.yaml")
    assert list(tmp_path.iterdir()) == []
    assert Settings.from_file(s.save(tmp_path / "s.json")) == s
