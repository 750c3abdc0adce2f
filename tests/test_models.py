import math

import pytest
import torch

from pixelweight.models import SmallCNN, UNet


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
@pytest.mark.parametrize("hw", [(64, 64), (61, 50), (9, 17)])
def test_unet_output_grid(stride, hw):
    model = UNet(in_channels=1, num_classes=11, width=4, depth=3, output_stride=stride).eval()
    out = model(torch.randn(2, 1, *hw))
    assert out.shape == (2, 11, math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))


def test_unet_padding_does_not_leak_into_valid_region():
    """Padding to a multiple of 2**depth must not change outputs far from the pad:
    the same image at a divisible size and cropped by one pixel agree in the interior."""
    torch.manual_seed(0)
    model = UNet(1, 3, width=4, depth=2, norm="none").eval()
    x = torch.randn(1, 1, 32, 32)
    full = model(x)
    cropped = model(x[..., :31, :31])
    assert cropped.shape[-2:] == (31, 31)
    torch.testing.assert_close(full[..., :12, :12], cropped[..., :12, :12])


def test_unet_dtype_and_gradients():
    model = UNet(1, 2, width=4, depth=2).double()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    out = model(x)
    assert out.dtype == torch.float64
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters())


def test_unet_group_norm_and_binary_head():
    out = UNet(3, 1, width=8, depth=2, norm="group")(torch.randn(1, 3, 20, 20))
    assert out.shape == (1, 1, 20, 20)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(output_stride=3), ValueError, "power of two"),
        (dict(output_stride=16, depth=3), ValueError, "exceeds"),
        (dict(norm="layer"), ValueError, "norm"),
        (dict(width=0), ValueError, "width"),
        (dict(depth=1.0), TypeError, "depth"),
    ],
)
def test_unet_validation(kw, exc, match):
    with pytest.raises(exc, match=match):
        UNet(**kw)


def test_unet_input_validation():
    model = UNet(in_channels=1)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError):
        model(torch.randn(8, 8))
    with pytest.raises(TypeError):
        model([[0.0]])
    # an 8-bit image used to fail deep inside conv2d with an unrelated message
    for dtype in (torch.uint8, torch.long, torch.bool):
        with pytest.raises(ValueError, match=rf"input must be a floating tensor .*got dtype {dtype}"):
            model(torch.zeros(1, 1, 8, 8, dtype=dtype))


def test_small_cnn():
    model = SmallCNN(1, 10, width=4, depth=3)
    assert model(torch.randn(3, 1, 128, 96)).shape == (3, 10)
    assert model(torch.randn(1, 1, 7, 7)).shape == (1, 10)
    with pytest.raises(ValueError, match="num_classes"):
        SmallCNN(num_classes=1)
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="input must be a floating tensor .*got dtype torch.uint8"):
        model(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
