import sys
from pathlib import Path
import torch
from torch import nn
import torchvision
from benchmarks.ptq import Case, _images
from benchmarks.targets import quantize_acekit
torch.manual_seed(0)
m = torchvision.models.VisionTransformer(image_size=224, patch_size=16, num_layers=2, num_heads=12, hidden_dim=768, mlp_dim=3072)
nn.init.normal_(m.heads.head.weight, std=0.02)
m.eval()
case = Case(name="vit_b_16", title="vit2", model=m, input_names=("x",), example=_images(1, 2)[0], calibration=_images(8, 3), evaluation=_images(2, 4), metric="sqnr")
out = Path("/tmp/ovw/vit2")
quantize_acekit(case, "openvino", out / "ov.onnx", out)
print("done")
