"""``acekit quantize MODEL``: the main job on the user's model.

MODEL is ``package.module:factory`` (a callable returning the ``nn.Module``) or a
TorchScript file. Calibration data is a folder of images, a ``.npy`` / ``.pt`` file of
inputs, or ``random``.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import torch

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
    """Run ``acekit quantize`` and print the report."""
    from acekit.job import run_job
    from acekit.settings import Settings

    shape = _shape(args.input_shape)
    model, name = load_model(args.model)
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
    calibration = load_calibration(args.calibration, shape, settings.training.stats_steps)
    generator = torch.Generator().manual_seed(7)
    evaluation = [(torch.randn(*shape, generator=generator),) for _ in range(8)]
    run_job(  # the report is the run log's last block
        model,
        name,
        example_inputs=(calibration[0],),
        calibration=calibration,
        evaluation=evaluation,
        out_dir=Path(args.out),
        settings=settings,
    )
    return 0


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
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise QuantizeCommandError(f"cannot load {spec!r}: {error}") from None
    model = factory() if callable(factory) and not isinstance(factory, torch.nn.Module) else factory
    if not isinstance(model, torch.nn.Module):
        raise QuantizeCommandError(f"{spec!r} gave a {type(model).__name__}, not a torch.nn.Module")
    return model.eval(), attribute


def load_calibration(source: str, shape: tuple[int, ...], steps: int) -> list[torch.Tensor]:
    """Calibration batches of ``shape`` from ``source``: folder, .npy/.pt file or random."""
    if source == "random":
        generator = torch.Generator().manual_seed(0)
        return [torch.randn(*shape, generator=generator) for _ in range(steps)]
    path = Path(source)
    if path.is_dir():
        return _images(path, shape, steps)
    if path.suffix == ".npy":
        import numpy as np

        return _split(torch.from_numpy(np.load(path)).float(), shape, source)
    if path.suffix in (".pt", ".pth"):
        data = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(data, list | tuple):
            data = torch.cat([torch.as_tensor(t) for t in data])
        return _split(torch.as_tensor(data).float(), shape, source)
    raise QuantizeCommandError(
        f"--calibration {source!r}: give a folder of images, a .npy or .pt file, or 'random'"
    )


def _split(data: torch.Tensor, shape: tuple[int, ...], source: str) -> list[torch.Tensor]:
    if tuple(data.shape[1:]) != tuple(shape[1:]):
        raise QuantizeCommandError(
            f"{source} holds inputs of shape {tuple(data.shape)}; --input-shape is {shape}"
        )
    return list(data.split(shape[0]))


def _images(folder: Path, shape: tuple[int, ...], steps: int) -> list[torch.Tensor]:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise QuantizeCommandError(f"{folder} has no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
    if len(shape) != 4 or shape[1] != 3:
        raise QuantizeCommandError(f"image calibration needs --input-shape N,3,H,W; got {shape}")
    height, width = shape[2], shape[3]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    images = []
    for file in files[: steps * shape[0]]:
        image = Image.open(file).convert("RGB").resize((width, height))
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        tensor = pixels.view(height, width, 3).permute(2, 0, 1).float() / 255
        images.append((tensor - mean) / std)
    return list(torch.stack(images).split(shape[0]))


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
