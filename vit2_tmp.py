"""2-layer ViT-B/16: acekit OV IR vs NNCF IR, for placement comparison."""
import sys
from pathlib import Path
import torch
from torch import nn
import torchvision
from benchmarks.ptq import Case, _images, export_fp32
from benchmarks.targets import quantize_acekit, quantize_nncf
torch.manual_seed(0)
m = torchvision.models.VisionTransformer(image_size=224, patch_size=16, num_layers=2, num_heads=12, hidden_dim=768, mlp_dim=3072)
nn.init.normal_(m.heads.head.weight, std=0.02)
m.eval()
case = Case(name="vit_b_16", title="vit2", model=m, input_names=("x",), example=_images(1, 2)[0], calibration=_images(8, 3), evaluation=_images(2, 4), metric="sqnr")
out = Path("/tmp/ovw/vit2"); out.mkdir(exist_ok=True)
fp32 = export_fp32(case, out / "fp32.onnx")
if "nncf" in sys.argv:
    quantize_nncf(case, fp32, out / "nncf.xml")
if "acekit" in sys.argv:
    quantize_acekit(case, "openvino", out / "ov.xml", out)
print("done")
