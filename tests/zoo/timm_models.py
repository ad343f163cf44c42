"""A sample of timm models across families, with random weights and small inputs."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from torch import nn

from tests.zoo.harness import Case
from tests.zoo.torchvision_models import randomise

#: Models built with ``img_size=64`` (ViT-like models whose position embeddings follow it).
RESIZED = {
    "beit_base_patch16_224",
    "botnet26t_256",
    "cait_xxs24_224",
    "coat_tiny",
    "coatnet_nano_rw_224",
    "convit_tiny",
    "deit3_small_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "deit_tiny_patch16_224",
    "efficientformerv2_s0",
    "efficientvit_m0",
    "eva02_tiny_patch14_224",
    "flexivit_small",
    "gcvit_xxtiny",
    "gernet_s",
    "gmlp_ti16_224",
    "hiera_tiny_224",
    "lambda_resnet26t",
    "levit_128s",
    "maxvit_nano_rw_256",
    "mixer_s16_224",
    "mobileone_s0",
    "mobilevit_xxs",
    "mobilevitv2_050",
    "mvitv2_tiny",
    "nest_tiny",
    "pit_ti_224",
    "regnetz_b16",
    "repvgg_a0",
    "resmlp_12_224",
    "resnext26ts",
    "samvit_base_patch16",
    "sequencer2d_s",
    "swin_tiny_patch4_window7_224",
    "swinv2_cr_tiny_224",
    "swinv2_tiny_window8_256",
    "tnt_s_patch16_224",
    "twins_pcpvt_small",
    "twins_svt_small",
    "visformer_tiny",
    "vit_base_patch32_224",
    "vit_little_patch16_reg4_gap_256",
    "vit_relpos_small_patch16_224",
    "vit_small_patch16_224",
    "vit_srelpos_small_patch16_224",
    "vit_tiny_patch16_224",
    "vitamin_small_224",
    "volo_d1_224",
    "xcit_nano_12_p16_224",
}
#: Models that need their default input size (windows, fixed token grids); others run at 64.
DEFAULT_SIZE = {
    "eca_halonext26ts": 256,
    "efficientformer_l1": 224,
    "halonet26t": 256,
    "haloregnetz_b": 224,
    "inception_v3": 299,
    "inception_v4": 299,
}

MODELS = [
    "resnet18",
    "resnet26d",
    "resnet50d",
    "resnext26ts",
    "seresnext26d_32x4d",
    "ecaresnet26t",
    "skresnet18",
    "res2net50_14w_8s",
    "res2next50",
    "resnest14d",
    "resnetrs50",
    "resnetv2_50",
    "resnetblur18",
    "wide_resnet50_2",
    "legacy_seresnet18",
    "gernet_s",
    "regnetx_002",
    "regnety_002",
    "regnetz_b16",
    "regnetv_040",
    "haloregnetz_b",
    "efficientnet_b0",
    "efficientnet_lite0",
    "tf_efficientnet_b0",
    "efficientnetv2_rw_t",
    "tf_efficientnetv2_b0",
    "mobilenetv2_035",
    "mobilenetv3_small_050",
    "mobilenetv3_large_100",
    "mobilenetv4_conv_small",
    "lcnet_050",
    "fbnetc_100",
    "mnasnet_small",
    "ghostnet_100",
    "ghostnetv2_100",
    "hardcorenas_a",
    "tinynet_e",
    "mixnet_s",
    "spnasnet_100",
    "semnasnet_075",
    "repghostnet_050",
    "densenet121",
    "dla34",
    "dla46x_c",
    "dpn48b",
    "ese_vovnet19b_dw",
    "cspresnet50",
    "cspdarknet53",
    "darknet17",
    "cs3darknet_focus_s",
    "nf_resnet26",
    "nfnet_l0",
    "dm_nfnet_f0",
    "rexnet_100",
    "rexnetr_100",
    "hrnet_w18_small",
    "selecsls42b",
    "vgg11",
    "repvgg_a0",
    "mobileone_s0",
    "inception_v3",
    "inception_v4",
    "xception41",
    "tresnet_m",
    "convnext_atto",
    "convnextv2_atto",
    "edgenext_xx_small",
    "efficientformer_l1",
    "efficientformerv2_s0",
    "levit_128s",
    "mobilevit_xxs",
    "mobilevitv2_050",
    "fastvit_t8",
    "starnet_s050",
    "hgnet_tiny",
    "hgnetv2_b0",
    "rdnet_tiny",
    "inception_next_tiny",
    "focalnet_tiny_srf",
    "efficientvit_b0",
    "efficientvit_m0",
    "ghostnetv3_050",
    "fasternet_t0",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch32_224",
    "vit_little_patch16_reg4_gap_256",
    "vit_relpos_small_patch16_224",
    "vit_srelpos_small_patch16_224",
    "deit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "deit3_small_patch16_224",
    "eva02_tiny_patch14_224",
    "beit_base_patch16_224",
    "cait_xxs24_224",
    "xcit_nano_12_p16_224",
    "flexivit_small",
    "samvit_base_patch16",
    "swin_tiny_patch4_window7_224",
    "swinv2_cr_tiny_224",
    "swinv2_tiny_window8_256",
    "twins_pcpvt_small",
    "twins_svt_small",
    "pvt_v2_b0",
    "poolformer_s12",
    "poolformerv2_s12",
    "convit_tiny",
    "crossvit_tiny_240",
    "coat_tiny",
    "coatnet_nano_rw_224",
    "maxvit_nano_rw_256",
    "gcvit_xxtiny",
    "davit_tiny",
    "tiny_vit_5m_224",
    "mvitv2_tiny",
    "nest_tiny",
    "sequencer2d_s",
    "mixer_s16_224",
    "resmlp_12_224",
    "gmlp_ti16_224",
    "visformer_tiny",
    "volo_d1_224",
    "pit_ti_224",
    "tnt_s_patch16_224",
    "hiera_tiny_224",
    "nextvit_small",
    "halonet26t",
    "botnet26t_256",
    "lambda_resnet26t",
    "eca_halonext26ts",
    "vitamin_small_224",
    "mambaout_femto",
]


def _build(name: str) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {"img_size": 64} if name in RESIZED else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False, **kwargs)
    return randomise(model)


def _images(size: int) -> Any:
    def make(batch: int, variant: int) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, 3, size, size),)

    return make


def cases() -> list[Case]:
    """The sample, each at the smallest size it accepts."""
    return [
        Case("timm", name, functools.partial(_build, name), _images(DEFAULT_SIZE.get(name, 64)))
        for name in MODELS
    ]
