"""upsample.py: the guided filter and bilinear upsampling of a coarse ab grid, against reference values."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from splitbrain_hub.errors import InputError
from splitbrain_hub.ops.upsample import Bilinear, GuidedFilter, guided_upsample, resolve_upsampler


def _box_reference(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window around each pixel, cut at the border: loops, for an (H, W) array."""
    h, w = x.shape
    return np.array([[x[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].mean() for j in range(w)] for i in range(h)])


def _step_edge(device='cpu'):
    """A 192x192 photo, L = 30 left of x = 80 and 70 right of it; ab on a 6x6 grid (32-pixel cells, centres
    16, 48, 80, ...): a = +40 in cells left of the edge, -40 right of it, 0 in the cell the edge cuts."""
    lightness = torch.full((1, 1, 192, 192), 30.0, device=device)
    lightness[..., 80:] = 70.0
    centres = torch.arange(6, device=device) * 32 + 16.0
    ab = torch.zeros(1, 2, 6, 6, device=device)
    ab[0, 0] = torch.where(centres < 80, 40.0, torch.where(centres > 80, -40.0, 0.0))
    truth = torch.where(torch.arange(192, device=device) < 80, 40.0, -40.0)
    return ab, lightness, truth


# --- shapes and types -----------------------------------------------------------------------------

@pytest.mark.parametrize('grid, full, channels', [((6, 6), (48, 64), 2), ((6, 6), (512, 768), 2), ((3, 5), (7, 9), 1),
                                                  ((6, 6), (4, 5), 3), ((1, 1), (10, 10), 2)])
def test_shapes(device, grid, full, channels):
    source = torch.randn(2, channels, *grid, device=device) * 30
    guide = torch.rand(2, 1, *full, device=device)
    out = guided_upsample(source, guide, radius=1, eps=1e-3)
    assert out.shape == (2, channels, *full) and out.dtype == torch.float32 and out.device.type == device.type
    assert torch.isfinite(out).all()
    assert Bilinear()(source, guide * 100).shape == GuidedFilter()(source, guide * 100).shape == out.shape


@pytest.mark.parametrize('dtype, expected', [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                             (torch.float32, torch.float32), (torch.float64, torch.float64)])
def test_computes_in_fp32_or_better(dtype, expected):
    source, guide = torch.randn(1, 2, 4, 4).to(dtype), torch.rand(1, 1, 16, 16).to(dtype)
    assert guided_upsample(source, guide, 1, 1e-3).dtype == expected
    assert Bilinear()(source, guide).dtype == expected


def test_fp32_inside_a_callers_autocast():
    source, guide = torch.randn(2, 2, 6, 6) * 30, torch.rand(2, 1, 64, 48)
    expected = guided_upsample(source, guide, 1, 1e-3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        inside = guided_upsample(source, guide, 1, 1e-3)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, expected, atol=0, rtol=0)


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('source, guide, message', [
    (np.zeros((1, 2, 6, 6)), torch.rand(1, 1, 8, 8), 'source: expected a floating point'),
    (torch.zeros(2, 6, 6), torch.rand(1, 1, 8, 8), 'source: expected a floating point'),
    (torch.zeros(1, 2, 6, 6, dtype=torch.int64), torch.rand(1, 1, 8, 8), 'source: expected a floating point'),
    (torch.zeros(1, 2, 6, 6), torch.rand(1, 8, 8), 'guide: expected a floating point'),
    (torch.zeros(1, 2, 6, 6), torch.rand(1, 3, 8, 8), 'guide: expected one channel'),
    (torch.zeros(2, 2, 6, 6), torch.rand(1, 1, 8, 8), 'expected the same number of images, got 2 and 1'),
])
def test_bad_tensors(source, guide, message):
    for upsample in (lambda s, g: guided_upsample(s, g, 1, 1e-3), GuidedFilter(), Bilinear()):
        with pytest.raises(InputError, match=message):
            upsample(source, guide)


@pytest.mark.parametrize('radius, eps, message', [
    (0, 1e-3, 'radius: expected an int >= 1'), (1.5, 1e-3, 'radius: expected an int >= 1'),
    (True, 1e-3, 'radius: expected an int >= 1'), (1, 0, 'eps: expected a finite number > 0'),
    (1, -1e-3, 'eps: expected a finite number > 0'), (1, math.nan, 'eps: expected a finite number > 0'),
    (1, math.inf, 'eps: expected a finite number > 0'), (1, '1e-3', 'eps: expected a finite number > 0'),
])
def test_bad_parameters(radius, eps, message):
    with pytest.raises(InputError, match=message):
        GuidedFilter(radius=radius, eps=eps)
    with pytest.raises(InputError, match=message):
        guided_upsample(torch.zeros(1, 2, 6, 6), torch.rand(1, 1, 8, 8), radius, eps)


def test_resolve_upsampler():
    assert resolve_upsampler('bilinear') == Bilinear() and resolve_upsampler('guided') == GuidedFilter()
    custom = GuidedFilter(radius=2, eps=1e-2)
    assert resolve_upsampler(custom) is custom
    for bad in ('nearest', None, 3, F.interpolate):
        with pytest.raises(InputError, match="upsample: expected one of \\('guided', 'bilinear'\\)"):
            resolve_upsampler(bad)


# --- reference values -----------------------------------------------------------------------------

def test_bilinear_is_torchs_bilinear_interpolation():
    source, guide = torch.randn(2, 2, 6, 6), torch.rand(2, 1, 50, 70)
    expected = F.interpolate(source, size=(50, 70), mode='bilinear', align_corners=False)
    torch.testing.assert_close(Bilinear()(source, guide), expected, atol=0, rtol=0)


@pytest.mark.parametrize('radius', [1, 2])
def test_constant_guide_gives_box_filtered_bilinear(device, radius):
    # A flat guide has no variance: a = 0 and b = the window mean of p, so q is p box-filtered twice (once for
    # b, once for the mean over windows), then interpolated bilinearly.
    source = torch.randn(1, 2, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 30
    guide = torch.full((1, 1, 40, 45), 0.5, dtype=torch.float64)
    twice = [_box_reference(_box_reference(channel.numpy(), radius), radius) for channel in source[0]]
    expected = F.interpolate(torch.from_numpy(np.stack(twice))[None], size=(40, 45), mode='bilinear',
                             align_corners=False)
    out = guided_upsample(source.to(device), guide.to(device), radius, eps=1e-3)
    torch.testing.assert_close(out.cpu(), expected, atol=1e-9, rtol=0)


def test_colour_linear_in_the_guide_is_kept_at_full_resolution(device):
    # If ab is exactly alpha * L + beta on the grid (L averaged over each cell), every window fits a = alpha,
    # b = beta, and the output is alpha * L + beta at every full-resolution pixel, fine detail included.
    g = torch.Generator().manual_seed(1)
    guide = torch.rand(2, 1, 60, 72, dtype=torch.float64, generator=g)
    alpha = torch.tensor([50.0, -80.0], dtype=torch.float64).view(1, 2, 1, 1)
    beta = torch.tensor([-10.0, 30.0], dtype=torch.float64).view(1, 2, 1, 1)
    source = alpha * F.adaptive_avg_pool2d(guide, (6, 6)) + beta
    out = guided_upsample(source.to(device), guide.to(device), radius=1, eps=1e-12)
    torch.testing.assert_close(out.cpu(), alpha * guide + beta, atol=1e-4, rtol=0)


def test_an_edge_in_lightness_stops_colour_from_bleeding(device):
    ab, lightness, truth = _step_edge(device)
    guided = GuidedFilter(radius=1, eps=1e-4)(ab, lightness)[0, 0, 96]
    bilinear = Bilinear()(ab, lightness)[0, 0, 96]
    band = slice(48, 112)  # the pixels between the centres of the cells next to the edge
    guided_error = (guided - truth)[band].abs().mean().item()
    bilinear_error = (bilinear - truth)[band].abs().mean().item()
    assert bilinear_error == pytest.approx(20.0)  # bilinear: a ramp from +40 to -40 across the band
    assert guided_error < 0.5
    # 10 pixels either side of the edge: bilinear is about a third of the way, guided keeps the colour.
    assert guided[70].item() == pytest.approx(40, abs=1) and guided[90].item() == pytest.approx(-40, abs=1)
    assert abs(bilinear[70].item()) < 15 and abs(bilinear[90].item()) < 15


def test_larger_eps_smooths_towards_the_window_mean():
    ab, lightness, truth = _step_edge()
    errors = [(GuidedFilter(radius=1, eps=eps)(ab, lightness)[0, 0, 96] - truth)[48:112].abs().mean().item()
              for eps in (1e-4, 1e-2, 1.0)]
    assert errors[0] < errors[1] < errors[2]


def test_batch_equals_one_by_one(device):
    g = torch.Generator().manual_seed(2)
    source = (torch.randn(3, 2, 6, 6, generator=g) * 30).to(device)
    guide = torch.rand(3, 1, 50, 40, generator=g).to(device)
    together = guided_upsample(source, guide, 1, 1e-3)
    for i in range(3):
        torch.testing.assert_close(guided_upsample(source[i:i + 1], guide[i:i + 1], 1, 1e-3), together[i:i + 1],
                                   atol=1e-5, rtol=1e-5)


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    source = (torch.randn(1, 2, 3, 4, dtype=torch.float64, generator=g) * 10).requires_grad_()
    guide = torch.rand(1, 1, 7, 9, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda s, i: guided_upsample(s, i, 1, 1e-2), (source, guide))
