import warnings

import numpy as np
import pytest
import torch
from skimage import color as skcolor

from splitbrain_hub.errors import InputError
from splitbrain_hub.ops.color import lab_to_rgb, lab_to_rgb_unchecked, rgb_to_lab, rgb_to_lab_unchecked

# Largest difference from scikit-image allowed, in L/a/b units for rgb_to_lab and [0, 1] units for lab_to_rgb.
# Measured: float64 ~1e-13 (rgb2lab) and ~1e-14 (lab2rgb); float32 ~6e-5 (rgb2lab) and ~5e-6 (lab2rgb).
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-3}

SHAPES = [(3, 4, 5), (2, 3, 4, 5), (2, 1, 3, 4, 5)]


def random_rgb(count: int, seed: int = 0) -> np.ndarray:
    """``count`` random sRGB colours plus the 8 corners of the cube, shape (count + 8, 3), float64."""
    corners = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=np.float64)
    return np.concatenate([np.random.default_rng(seed).random((count, 3)), corners])


def random_lab(count: int, seed: int = 0) -> np.ndarray:
    """``count`` random Lab triples over the full box, many of them out of the sRGB gamut, shape (count, 3)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, 100, count), rng.uniform(-128, 127, count), rng.uniform(-128, 127, count)], 1)


def to_image(colours: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(P, 3) colours -> a (3, P, 1) image."""
    return torch.from_numpy(colours).T.unsqueeze(-1).to(device=device, dtype=dtype)


def from_image(image: torch.Tensor) -> np.ndarray:
    """(3, P, 1) image -> (P, 3) float64 colours."""
    return image.squeeze(-1).T.double().cpu().numpy()


def skimage_lab2rgb(lab: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # "negative Z values that have been clipped to zero"
        return skcolor.lab2rgb(lab)


def script(function):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit.script is deprecated in favour of compile
        return torch.jit.script(function)


class TestRgbToLab:
    def test_smoke(self, device):
        lab = rgb_to_lab(torch.rand(1, 3, 4, 5, device=device))
        assert lab.device.type == device.type
        assert 0 <= lab[:, 0].min() and lab[:, 0].max() <= 100

    @pytest.mark.parametrize('shape', SHAPES)
    def test_shapes(self, shape, device):
        assert rgb_to_lab(torch.rand(shape, device=device)).shape == shape

    @pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
    def test_matches_skimage(self, dtype, device):
        colours = random_rgb(10_000)
        lab = from_image(rgb_to_lab(to_image(colours, device, dtype)))
        error = np.abs(lab - skcolor.rgb2lab(colours)).max()
        assert error < TOLERANCE[dtype]

    def test_known_values(self):
        rgb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
        lab = from_image(rgb_to_lab(rgb.T.unsqueeze(-1)))
        # Black, white and pure red, as scikit-image gives them.
        expected = np.array([[0.0, 0.0, 0.0], [100.0, -0.002455, 0.004653], [53.24059, 80.09231, 67.20275]])
        np.testing.assert_allclose(lab, expected, atol=1e-4)

    @pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
    def test_low_precision(self, dtype):
        rgb = torch.rand(2, 3, 4, 5).to(dtype)
        lab = rgb_to_lab(rgb)
        assert lab.dtype == dtype
        assert torch.isfinite(lab).all()

    def test_does_not_modify_input(self):
        rgb = torch.rand(3, 4, 5)
        copy = rgb.clone()
        rgb_to_lab(rgb)
        assert torch.equal(rgb, copy)

    @pytest.mark.parametrize(
        ('image', 'message'),
        [
            (np.zeros((3, 4, 5)), 'image: expected a torch.Tensor, got ndarray'),
            (torch.zeros(3, 4, 5, dtype=torch.uint8), 'image: expected a floating-point dtype, got torch.uint8'),
            (torch.zeros(4, 4, 5), r'image: expected shape \(\*, 3, H, W\), got \(4, 4, 5\)'),
            (torch.zeros(3, 5), r'image: expected shape \(\*, 3, H, W\), got \(3, 5\)'),
            (torch.full((3, 4, 5), float('nan')), 'image: expected finite values, got NaN or infinity'),
        ],
    )
    def test_errors(self, image, message):
        with pytest.raises(InputError, match=message):
            rgb_to_lab(image)

    def test_gradcheck(self):
        # Inside (0.2, 0.9), away from the gamma knee at 0.04045 and the f(t) knee near black.
        rgb = (0.2 + 0.7 * torch.rand(1, 3, 2, 2, dtype=torch.float64)).requires_grad_()
        assert torch.autograd.gradcheck(rgb_to_lab, (rgb,))

    def test_gradient_finite_at_edges(self):
        rgb = torch.tensor([0.0, 0.04045, 1.0], dtype=torch.float64).view(1, 3, 1, 1).repeat(1, 1, 3, 1)
        rgb.requires_grad_()
        rgb_to_lab(rgb).sum().backward()
        assert torch.isfinite(rgb.grad).all()

    def test_script_and_fx(self):
        rgb = torch.rand(2, 3, 4, 5)
        torch.testing.assert_close(script(rgb_to_lab_unchecked)(rgb), rgb_to_lab_unchecked(rgb))

        class Module(torch.nn.Module):
            def forward(self, image):
                return rgb_to_lab_unchecked(image)

        torch.testing.assert_close(torch.fx.symbolic_trace(Module())(rgb), rgb_to_lab_unchecked(rgb))


class TestLabToRgb:
    def test_smoke(self, device):
        lab = torch.tensor([50.0, 10.0, -10.0], device=device).view(3, 1, 1).expand(3, 4, 5)
        rgb = lab_to_rgb(lab)
        assert rgb.device.type == device.type
        assert 0 <= rgb.min() and rgb.max() <= 1

    @pytest.mark.parametrize('shape', SHAPES)
    def test_shapes(self, shape, device):
        lab = torch.rand(shape, device=device) * torch.tensor([100.0, 50.0, 50.0], device=device).view(3, 1, 1)
        assert lab_to_rgb(lab).shape == shape

    @pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
    def test_matches_skimage(self, dtype, device):
        # Random Lab over the whole box (mostly out of gamut, so it tests the clipping too) and in-gamut Lab.
        lab = np.concatenate([random_lab(10_000), skcolor.rgb2lab(random_rgb(10_000, seed=1))])
        rgb = from_image(lab_to_rgb(to_image(lab, device, dtype)))
        error = np.abs(rgb - skimage_lab2rgb(lab)).max()
        assert error < TOLERANCE[dtype]

    def test_out_of_gamut_is_clipped_like_skimage(self):
        # a = 127, b = -128 is far outside sRGB; L = 150 and L = -10 are outside [0, 100].
        lab = np.array([[50.0, 127.0, -128.0], [150.0, 0.0, 0.0], [-10.0, 0.0, 0.0], [50.0, 0.0, 300.0]])
        rgb = lab_to_rgb(to_image(lab, torch.device('cpu'), torch.float64))
        np.testing.assert_allclose(from_image(rgb), skimage_lab2rgb(lab), atol=1e-12)
        unclipped = lab_to_rgb(to_image(lab, torch.device('cpu'), torch.float64), clip=False)
        assert unclipped.min() < 0 and unclipped.max() > 1

    def test_round_trip(self, device):
        rgb = to_image(random_rgb(10_000), device, torch.float64)
        assert (lab_to_rgb(rgb_to_lab(rgb)) - rgb).abs().max() < 1e-4

    @pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
    def test_low_precision(self, dtype):
        lab = rgb_to_lab(torch.rand(2, 3, 4, 5)).to(dtype)
        rgb = lab_to_rgb(lab)
        assert rgb.dtype == dtype
        assert torch.isfinite(rgb).all()

    def test_does_not_modify_input(self):
        lab = rgb_to_lab(torch.rand(3, 4, 5))
        copy = lab.clone()
        lab_to_rgb(lab)
        assert torch.equal(lab, copy)

    @pytest.mark.parametrize(
        ('image', 'message'),
        [
            ([[[50.0]], [[0.0]], [[0.0]]], 'image: expected a torch.Tensor, got list'),
            (torch.zeros(3, 4, 5, dtype=torch.int64), 'image: expected a floating-point dtype, got torch.int64'),
            (torch.zeros(2, 4, 5), r'image: expected shape \(\*, 3, H, W\), got \(2, 4, 5\)'),
            (torch.full((3, 4, 5), float('inf')), 'image: expected finite values, got NaN or infinity'),
        ],
    )
    def test_errors(self, image, message):
        with pytest.raises(InputError, match=message):
            lab_to_rgb(image)

    def test_gradcheck(self):
        # In-gamut Lab well inside the cube, so neither the clip nor a knee sits under the check.
        lab = rgb_to_lab(0.2 + 0.6 * torch.rand(1, 3, 2, 2, dtype=torch.float64)).requires_grad_()
        assert torch.autograd.gradcheck(lab_to_rgb, (lab,))

    def test_gradient_finite_out_of_gamut(self):
        lab = to_image(np.array([[50.0, 127.0, -128.0], [0.0, 0.0, 0.0], [100.0, 0.0, 300.0]]), 'cpu', torch.float64)
        lab.requires_grad_()
        lab_to_rgb(lab, clip=False).sum().backward()
        assert torch.isfinite(lab.grad).all()

    def test_script_and_fx(self):
        lab = rgb_to_lab(torch.rand(2, 3, 4, 5))
        scripted = script(lab_to_rgb_unchecked)
        torch.testing.assert_close(scripted(lab, True), lab_to_rgb_unchecked(lab))
        torch.testing.assert_close(scripted(lab, False), lab_to_rgb_unchecked(lab, clip=False))

        class Module(torch.nn.Module):
            def forward(self, image):
                return lab_to_rgb_unchecked(image)

        torch.testing.assert_close(torch.fx.symbolic_trace(Module())(lab), lab_to_rgb_unchecked(lab))


def test_lightness_alone_equals_lab_lightness():
    """colorize's full-resolution shortcut: L without a and b is rgb_to_lab's L (float64: to rounding)."""
    from splitbrain_hub.ops.color import rgb_to_lightness_unchecked
    rgb = torch.rand(2, 3, 17, 23, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rgb[0, :, 0, :4] = torch.tensor([0.0, 0.01, 0.04045, 1.0], dtype=torch.float64)  # black, both knees, white
    lightness = rgb_to_lightness_unchecked(rgb)
    assert lightness.shape == (2, 1, 17, 23)
    torch.testing.assert_close(lightness, rgb_to_lab(rgb)[:, :1], atol=1e-12, rtol=0)
