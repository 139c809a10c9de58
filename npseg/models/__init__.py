"""npseg.models: backbones and segmentation networks, written once (forward only) for any device.

``build_model(name, num_classes, **config)`` builds a model by its command-line name; the name and
the config are what a checkpoint stores, so ``npseg evaluate``/``predict`` rebuild the model.
"""

from __future__ import annotations

from .fcn import FCN
from .fpn import FPN
from .maskrcnn import MaskRCNN
from .maskrcnn_config import MaskRCNNConfig
from .resnet import BasicBlock, Bottleneck, ResNet
from .segnet import SegNet
from .unet import UNet
from .vgg import VGG16

__all__ = ["VGG16", "ResNet", "BasicBlock", "Bottleneck", "FCN", "UNet", "SegNet", "FPN",
           "MaskRCNN", "MaskRCNNConfig", "MODELS", "build_model"]

#: command-line name -> (class, fixed keyword arguments)
MODELS = {
    "fcn32s": (FCN, {"variant": "32s"}),
    "fcn16s": (FCN, {"variant": "16s"}),
    "fcn8s": (FCN, {"variant": "8s"}),
    "unet": (UNet, {"padding": "same"}),
    "unet-valid": (UNet, {"padding": "valid"}),
    "segnet": (SegNet, {}),
    "maskrcnn": (MaskRCNN, {}),  # num_classes counts foreground classes only
}


def build_model(name: str, num_classes: int, **config):
    """Build the model called ``name`` (see ``MODELS``) with ``config`` as keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    cls, fixed = MODELS[name]
    clash = set(fixed) & set(config)
    if clash:
        raise ValueError(f"model {name!r} fixes {', '.join(sorted(clash))}; do not pass it")
    return cls(num_classes, **fixed, **config)
