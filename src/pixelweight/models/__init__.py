"""Models shared by the chapters: a small U-Net, a small CNN classifier, and both behind a
sampler (uniform downsampling, the saliency sampler) for the saliency-sampler chapter."""

from .classifier import SmallCNN
from .unet import UNet
from .zoom import ZOOM_MODES, ZoomClassifier, ZoomSegmenter

from .upsampled import UpsampledUNet

__all__ = ["UNet", "SmallCNN", "UpsampledUNet", "ZOOM_MODES", "ZoomClassifier", "ZoomSegmenter"]
