"""Models shared by the chapters: a small U-Net and a small CNN classifier."""

from .classifier import SmallCNN
from .unet import UNet

__all__ = ["UNet", "SmallCNN"]
