"""``acekit quantize MODEL``: the main job on the user's model.

MODEL is ``package.module:factory`` (a callable returning the ``nn.Module``) or a
TorchScript file. Calibration data is a folder of images, a ``.npy`` / ``.pt`` file of
inputs, or ``random``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import torch

from acekit.settings import Settings

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class QuantizeCommandError(ValueError):
    """The command's arguments name something that cannot be used."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``acekit quantize``."""
    parser.add_argument("model", help="package.module:factory, or a TorchScript file (.pt)")
    parser.add_argument(
        "--input-shape",
        required=True,
        help="shape of one model input, batch included, e.g. 1,3,224,224",
    )
    parser.add_argument(
        "--calibration",
        default="random",
        help="a folder of images, a .npy or .pt file of inputs, or 'random' (default)",
    )
    parser.add_argument("--target", default=None, help="deployment target (default: onnxruntime)")
    parser.add_argument("--weights-bits", type=int, default=None, help="weight bit width (2-8)")
    parser.add_argument("--settings", default=None, help="a settings file (TOML, YAML or JSON)")
    parser.add_argument("--out", default="out/quantize", help="output folder (out/quantize)")


def run(args: argparse.Namespace) -> int:
    """Run ``acekit quantize`` and print the report.

    The cheap checks (shape, output folder, settings, calibration data) run before the
    model is imported, so a mistake in them costs no model loading.
    """
    from acekit.job import run_job

    shape = _shape(args.input_shape)
    out_dir = check_out_dir(args.out)
    settings = _settings(args)
    calibration = load_calibration(args.calibration, shape, settings.training.stats_steps)
    model, name = load_model(args.model)
    generator = torch.Generator().manual_seed(7)
    evaluation = [(torch.randn(*shape, generator=generator),) for _ in range(8)]
    create_out_dir(out_dir)
    run_job(  # the report is the run log's last block
        model,
        name,
        example_inputs=(calibration[0],),
        calibration=calibration,
        evaluation=evaluation,
        out_dir=out_dir,
        settings=settings,
    )
    return 0


def check_out_dir(out: str) -> Path:
    """``--out`` as a Path, after checking that it is (or can become) a writable folder.

    Nothing is created here: the job creates the folder once everything else passed.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise QuantizeCommandError(
            f"--out {out}: is a file, not a folder; give a folder (it is created if missing)"
        )
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise QuantizeCommandError(f"--out {out}: {existing} is a file; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise QuantizeCommandError(
            f"--out {out}: folder {existing} is not writable; give a folder you can write to"
        )
    return path


def create_out_dir(path: Path) -> Path:
    """Create the ``--out`` folder (after every check passed); a failure is one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise QuantizeCommandError(
            f"--out {path}: cannot create the folder ({error.strerror or error}); "
            "give a folder you can write to"
        ) from None
    return path


def _settings(args: argparse.Namespace) -> Settings:
    """The --settings file (or the defaults) with --target and --weights-bits applied."""
    settings = Settings.from_file(args.settings) if args.settings else Settings()
    changes: dict[str, Any] = {}
    if args.target is not None:
        changes["deployment"] = {
            **settings.to_dict()["deployment"],
            "target_framework": args.target,
        }
    if args.weights_bits is not None:
        changes["quantization"] = {
            **settings.to_dict()["quantization"],
            "weights_num_bits": args.weights_bits,
        }
    if changes:
        settings = Settings.from_dict({**settings.to_dict(), **changes})
    return settings


def load_model(spec: str) -> tuple[torch.nn.Module, str]:
    """The model ``spec`` names and a short name for its files."""
    path = Path(spec)
    if path.suffix in (".pt", ".pth", ".ts") or path.exists():
        if not path.is_file():
            raise QuantizeCommandError(f"{spec}: no such TorchScript file")
        try:
            return torch.jit.load(str(path), map_location="cpu").eval(), path.stem
        except Exception as error:
            raise QuantizeCommandError(f"{spec} is not a TorchScript file: {error}") from None
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise QuantizeCommandError(
            f"{spec!r}: give package.module:factory (e.g. torchvision.models:resnet18) "
            "or a TorchScript file"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        fix = _import_fix(module_name, error)
        raise QuantizeCommandError(f"cannot load {spec!r}: {fix}") from None
    try:
        factory = getattr(module, attribute)
    except AttributeError:
        raise QuantizeCommandError(
            f"cannot load {spec!r}: module {module_name!r} has no {attribute!r}; "
            "check the name after ':'"
        ) from None
    if isinstance(factory, torch.nn.Module):
        return factory.eval(), attribute
    if not callable(factory):
        raise QuantizeCommandError(
            f"{spec!r} is of type {type(factory).__name__}, not a torch.nn.Module; "
            "give the model class or a function that builds the model"
        )
    _check_takes_no_arguments(spec, factory)
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise QuantizeCommandError(
            f"{spec!r} returned a value of type {type(model).__name__}, not a "
            "torch.nn.Module; give a function that returns the model"
        )
    return model.eval(), attribute


def _import_fix(module_name: str, error: ImportError) -> str:
    """What went wrong importing the user's module, and what to do about it."""
    missing = error.name if isinstance(error, ModuleNotFoundError) else None
    if missing and (module_name == missing or module_name.startswith(f"{missing}.")):
        return (
            f"{error}; run from the folder that holds {module_name!r} or add that folder "
            "to PYTHONPATH"
        )
    # The module was found, but something it imports was not.
    return f"importing {module_name!r} failed: {error}; install what it needs"


def _check_takes_no_arguments(spec: str, factory: Any) -> None:
    """Refuse a factory that cannot be called without arguments, before calling it."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins and some C extensions have none
        return
    try:
        signature.bind()
    except TypeError:
        raise QuantizeCommandError(
            f"{spec!r} needs arguments {signature}; give a factory that takes none "
            "(a function in your own module that builds the model)"
        ) from None


def load_calibration(source: str, shape: tuple[int, ...], steps: int) -> list[torch.Tensor]:
    """Calibration batches of ``shape`` from ``source``: folder, .npy/.pt file or random."""
    if source == "random":
        generator = torch.Generator().manual_seed(0)
        return [torch.randn(*shape, generator=generator) for _ in range(steps)]
    path = Path(source)
    if path.is_dir():
        return _images(path, shape, steps)
    if path.suffix not in (".npy", ".pt", ".pth"):
        raise QuantizeCommandError(
            f"--calibration {source!r}: give a folder of images, a .npy or .pt file, or 'random'"
        )
    if not path.is_file():
        raise QuantizeCommandError(f"--calibration {source}: no such file; check the path")
    data = _read_npy(path) if path.suffix == ".npy" else _read_pt(path)
    return _split(data, shape, source)


def _read_npy(path: Path) -> torch.Tensor:
    """The numeric array in ``path``, read without unpickling anything."""
    import numpy as np

    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    with path.open("rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
        except (ValueError, OSError, EOFError):
            raise QuantizeCommandError(
                f"--calibration {path}: not a .npy file (save one with numpy.save)"
            ) from None
        try:
            # The header gives the dtype before any data is read (or unpickled).
            dtype = readers[version](handle)[2] if version in readers else None
        except (ValueError, OSError, EOFError) as error:
            raise QuantizeCommandError(
                f"--calibration {path}: damaged or truncated .npy header ({error}); write it again"
            ) from None
    if dtype is not None and dtype.kind not in "biuf":
        what = "Python objects, which acekit does not unpickle" if dtype.hasobject else dtype
        raise QuantizeCommandError(
            f"--calibration {path}: holds {what}; save a numeric array, e.g. "
            "numpy.save(path, inputs.astype(numpy.float32))"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise QuantizeCommandError(
            f"--calibration {path}: damaged or truncated ({error}); write it again"
        ) from None
    return torch.from_numpy(array).float()


def _read_pt(path: Path) -> torch.Tensor:
    """The tensor (or list of tensors, one per batch) in ``path``, loaded weights-only."""
    fix = "save a tensor, or a list of tensors, with torch.save"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file or a pickle of objects: both refused
        # torch's own message advises weights_only=False, which would run the file's code.
        raise QuantizeCommandError(
            f"--calibration {path}: cannot be read as tensors: it is damaged, or it holds "
            f"Python objects that acekit does not unpickle ({type(error).__name__}); {fix}"
        ) from None
    parts = list(data) if isinstance(data, list | tuple) else [data]
    if not parts or not all(isinstance(t, torch.Tensor) and not t.is_complex() for t in parts):
        if isinstance(data, torch.Tensor):
            found = f"a {data.dtype} tensor"
        elif isinstance(data, list | tuple) and parts:
            found = f"a {type(data).__name__} of other things than real-valued tensors"
        else:
            found = f"a {type(data).__name__}" if parts else f"an empty {type(data).__name__}"
        raise QuantizeCommandError(f"--calibration {path}: holds {found}; {fix}")
    try:
        return torch.cat([t.float() for t in parts])
    except RuntimeError:
        shapes = sorted({tuple(t.shape) for t in parts})
        raise QuantizeCommandError(
            f"--calibration {path}: its tensors have different shapes {shapes}; {fix} "
            "of one input shape"
        ) from None


def _split(data: torch.Tensor, shape: tuple[int, ...], source: str) -> list[torch.Tensor]:
    if data.dim() == 0 or tuple(data.shape[1:]) != tuple(shape[1:]):
        raise QuantizeCommandError(
            f"--calibration {source}: holds inputs of shape {tuple(data.shape)}; "
            f"--input-shape is {shape} (all but the first dimension must match)"
        )
    if data.shape[0] == 0:
        raise QuantizeCommandError(f"--calibration {source}: holds no inputs (first dimension 0)")
    return list(data.split(shape[0]))


def _images(folder: Path, shape: tuple[int, ...], steps: int) -> list[torch.Tensor]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise QuantizeCommandError(f"{folder} has no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
    if len(shape) != 4 or shape[1] != 3:
        raise QuantizeCommandError(f"image calibration needs --input-shape N,3,H,W; got {shape}")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    images = [(_image(file, shape[2], shape[3]) - mean) / std for file in files[: steps * shape[0]]]
    return list(torch.stack(images).split(shape[0]))


def _image(file: Path, height: int, width: int) -> torch.Tensor:
    """The RGB pixels of ``file`` in [0, 1], resized to ``height`` x ``width``."""
    from PIL import Image

    try:
        with Image.open(file) as opened:
            image = opened.convert("RGB").resize((width, height))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        # PIL's messages ("image file is truncated") do not say which file of the folder.
        raise QuantizeCommandError(
            f"calibration image {file}: cannot be read ({error}); "
            "replace it or remove it from the folder"
        ) from None
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(height, width, 3).permute(2, 0, 1).float() / 255


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise QuantizeCommandError(
            f"--input-shape {text!r}: give integers like 1,3,224,224"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise QuantizeCommandError(f"--input-shape {text!r}: every dimension must be positive")
    return shape
