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


# ----------------------------------------------------------------------------------
# UpsampledUNet (the spectral chapter's model)
# ----------------------------------------------------------------------------------
from pixelweight.models import UpsampledUNet  # noqa: E402
from pixelweight.spectral import TruncatedUNet, count_flops  # noqa: E402


@pytest.mark.parametrize("stride", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("hw", [(32, 32), (29, 40)])
def test_upsampled_unet_returns_logits_at_the_input_size(stride, hw):
    model = UpsampledUNet(num_classes=5, width=4, depth=4, output_stride=stride).eval()
    out = model(torch.randn(2, 1, *hw))
    assert out.shape == (2, 5, *hw) and model.logit_stride == stride


def test_upsampled_unet_at_stride_one_is_the_unet_exactly():
    torch.manual_seed(0)
    plain = UNet(num_classes=3, width=4, depth=3)
    model = UpsampledUNet(num_classes=3, width=4, depth=3)
    model.unet.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 24, 24)
    assert torch.equal(model.eval()(x), plain.eval()(x))


def test_upsampled_unet_upsamples_the_coarse_logits_bilinearly():
    torch.manual_seed(0)
    model = UpsampledUNet(num_classes=3, width=4, depth=3, output_stride=4).eval()
    x = torch.randn(1, 1, 32, 32)
    coarse = model.unet(x)
    assert coarse.shape[-2:] == (8, 8)
    expected = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("method", ["fft", "area"])
def test_upsampled_unet_truncation_is_the_truncated_unet_upsampled(method):
    torch.manual_seed(0)
    model = UpsampledUNet(num_classes=3, width=4, depth=3, truncation=2, truncation_method=method).eval()
    x = torch.randn(2, 1, 32, 32)
    coarse = TruncatedUNet(model.unet, 2, method=method)(x)
    if method == "area":  # block means sit at block centres: F.interpolate's convention
        expected = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    else:  # the FFT crop samples every other pixel: logit j sits at pixel 2j
        from pixelweight.models.upsampled import _upsample

        expected = _upsample(coarse, (32, 32), 2, 0.0)
        assert not torch.allclose(expected, torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear",
                                                                            align_corners=False))
    torch.testing.assert_close(model(x), expected)
    assert model.logit_stride == 2


def test_upsampled_unet_truncation_shares_the_parameters_of_the_plain_network():
    plain, cut = UpsampledUNet(width=4, depth=3), UpsampledUNet(width=4, depth=3, truncation=4)
    assert list(plain.state_dict()) == list(cut.state_dict())  # a trained t = 1 loads into t = 4
    cut.load_state_dict(plain.state_dict())
    assert sum(p.numel() for p in cut.parameters()) == sum(p.numel() for p in plain.parameters())


def test_upsampled_unet_truncation_cuts_the_decoder_cost_by_about_t_squared():
    full = count_flops(UpsampledUNet(width=4, depth=3).eval(), (1, 1, 32, 32))
    cut = count_flops(UpsampledUNet(width=4, depth=3, truncation=2).eval(), (1, 1, 32, 32))
    decoder = ("unet.up", "unet.decoder", "unet.head")
    assert full.within(*decoder) == 4 * cut.within(*decoder)
    assert full.within("unet.encoder") == cut.within("unet.encoder")


def test_upsampled_unet_gradients_reach_every_parameter():
    model = UpsampledUNet(num_classes=3, width=4, depth=3, output_stride=2, truncation=2)
    model(torch.randn(2, 1, 32, 32)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("kw, match", [
    (dict(output_stride=3), "power of two"),
    (dict(output_stride=16, depth=3), "exceeds"),
    (dict(truncation=0), "truncation"),
    (dict(truncation_method="nearest"), "truncation_method"),
])
def test_upsampled_unet_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        UpsampledUNet(**kw)


def test_upsampled_unet_truncation_needs_a_bottleneck_it_divides():
    model = UpsampledUNet(width=4, depth=3, truncation=4)
    with pytest.raises(ValueError, match="not a multiple of factor=4"):
        model(torch.randn(1, 1, 16, 16))  # bottleneck 2 x 2
    with pytest.raises(ValueError, match="floating"):
        UpsampledUNet(width=4)(torch.zeros(1, 1, 8, 8, dtype=torch.long))


def test_upsampling_with_the_block_centre_convention_is_f_interpolate():
    from pixelweight.models.upsampled import _upsample

    x = torch.randn(2, 3, 5, 7)
    for stride in (2, 4):
        expected = torch.nn.functional.interpolate(x, size=(5 * stride, 7 * stride), mode="bilinear",
                                                   align_corners=False)
        # the grid_sample path at the same offset (nudged off the fast path) agrees
        got = _upsample(x, (5 * stride, 7 * stride), stride, (stride - 1) / 2 + 1e-12)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["fft", "area"])
@pytest.mark.parametrize("t", [2, 4])
def test_truncated_logits_stay_where_the_input_put_them(method, t):
    """A smooth bump through truncation by t and back: its centre of mass does not move (the FFT
    crop samples at every t-th pixel, the area mean at block centres; the upsampling follows)."""
    from pixelweight.models.upsampled import _upsample
    from pixelweight.spectral import area_downsample, fft_crop

    size = 32
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    bump = torch.exp(-((yy - 13.0) ** 2 + (xx - 17.0) ** 2) / (2 * 3.0 ** 2))[None, None]
    coarse = fft_crop(bump, size // t) if method == "fft" else area_downsample(bump, t)
    centre = 0.0 if method == "fft" else (t - 1) / 2
    back = _upsample(coarse, (size, size), t, centre)[0, 0]
    mass = back.sum()
    assert float((back * yy).sum() / mass) == pytest.approx(13.0, abs=0.05)
    assert float((back * xx).sum() / mass) == pytest.approx(17.0, abs=0.05)
