"""torchvision's classification, segmentation and detection models as zoo cases."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tests.zoo.harness import Case


def image_size(name: str) -> int:
    """The smallest input size the classifier accepts (64 unless it needs more)."""
    if name.startswith("vit_"):
        return 2 * int(name.rsplit("_", 1)[1])  # 2x2 patches: same graph, tiny tensors
    if name == "maxvit_t":
        return 224  # its window partitions are built for 224x224 inputs
    if name == "inception_v3":
        return 80  # its stem needs at least 75x75
    return 64


@torch.no_grad()
def randomise(model: nn.Module) -> nn.Module:
    """Weights that make every op count: no all-zero heads, no default BN statistics."""
    for param in model.parameters():
        if not param.any():  # ViT's head and class token start at zero
            param.normal_(0.0, 0.02)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.running_mean.uniform_(-0.1, 0.1)
            assert module.running_var is not None
            module.running_var.uniform_(0.5, 1.5)
    return model


def _get(name: str, **kwargs: Any) -> nn.Module:
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet/inception warn about their init
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    return randomise(model)


def _images(size: int) -> Any:
    def make(batch: int, variant: int) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, 3, size, size),)

    return make


def classification() -> list[Case]:
    """Every torchvision classifier."""
    import torchvision

    cases = []
    for name in torchvision.models.list_models(module=torchvision.models):
        kwargs: dict[str, Any] = {}
        if name.startswith("vit_"):
            kwargs["image_size"] = image_size(name)
        cases.append(
            Case(
                "torchvision-classification",
                name,
                functools.partial(_get, name, **kwargs),
                _images(image_size(name)),
            )
        )
    return cases


def segmentation() -> list[Case]:
    """Every torchvision segmentation model (without the auxiliary head)."""
    import torchvision

    return [
        Case(
            "torchvision-segmentation",
            name,
            functools.partial(_get, name, weights_backbone=None, num_classes=5),
            _images(64),
        )
        for name in torchvision.models.list_models(module=torchvision.models.segmentation)
    ]


#: What the parse error of a whole detector (list-of-images transform, NMS) must tell the
#: user: quantize the backbone, keep the rest float (docs/quantization.md).
DETECTOR_REMEDY = "trace on their own: model.backbone."


class DetectionFeatures(nn.Module):
    """The traceable part of a detector: its backbone (with FPN); heads and NMS stay float."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone: nn.Module = detector.backbone  # type: ignore[assignment]

    def forward(self, images: torch.Tensor) -> Any:
        """The backbone's feature maps."""
        return self.backbone(images)


def _features(build: Callable[[], nn.Module]) -> nn.Module:
    return DetectionFeatures(build())


def detection() -> list[Case]:
    """Each torchvision detector: the whole model (post-processing included) and its backbone."""
    import torchvision

    cases = []
    for name in torchvision.models.list_models(module=torchvision.models.detection):
        sizes: dict[str, Any] = {} if name.startswith("ssd") else {"min_size": 64, "max_size": 64}
        build = functools.partial(_get, name, weights_backbone=None, num_classes=3, **sizes)
        # SSD's extra layers shrink the map below their kernels under 300 px.
        size = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320}.get(name, 64)
        cases.append(
            Case(
                "torchvision-detection",
                name,
                build,
                _images(size),
                expected_parse_error=DETECTOR_REMEDY,
            )
        )
        cases.append(
            Case(
                "torchvision-detection",
                f"{name}.backbone",
                functools.partial(_features, build),
                _images(size),
            )
        )
    return cases
