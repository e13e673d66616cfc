"""sRGB (D65) <-> CIE Lab in pure torch, with the same formulas and constants as ``skimage.color``.

The paper works in Lab: the network sees L and predicts ab (or the reverse), so these conversions run inside
the model's ``forward``. That is why each public function is split in two:

- ``rgb_to_lab`` / ``lab_to_rgb`` check their input and raise ``InputError`` on anything unusable;
- ``rgb_to_lab_unchecked`` / ``lab_to_rgb_unchecked`` (and ``rgb_to_lightness_unchecked``, L alone) are the bare
  maths, with no checks and no Python branching on tensor values, so they are differentiable, traceable by
  ``torch.fx`` and scriptable by ``torch.jit.script``: the model, the prediction pipeline and the exported
  graphs call these, after checking their own inputs once.

Constants follow ``skimage.color.rgb2lab`` / ``lab2rgb`` (D65 white, 2° observer) so results agree with it to
rounding error; they are built on the input's device and in its dtype.
"""

import torch
from torch import Tensor

from ..errors import InputError

__all__ = ['PIXELS_PER_PASS', 'lab_to_rgb', 'lab_to_rgb_unchecked', 'rgb_to_lab', 'rgb_to_lab_unchecked',
           'rgb_to_lightness_unchecked']

# Large images are converted this many pixels at a time (rows of a photo, images of a batch): the temporaries
# of the elementwise passes then stay in the CPU cache, and peak memory stays a few channels of that size.
PIXELS_PER_PASS = 1 << 18


def rgb_to_lab(image: Tensor) -> Tensor:
    r"""Convert sRGB images to CIE Lab (D65 white, 2° observer), as ``skimage.color.rgb2lab`` does.

    Args:
        image: gamma-encoded sRGB in :math:`[0, 1]`, shape :math:`(*, 3, H, W)`, any floating dtype.

    Returns:
        Lab, shape :math:`(*, 3, H, W)`, same dtype and device: L in :math:`[0, 100]`,
        a and b roughly in :math:`[-128, 127]`.

    Raises:
        InputError: ``image`` is not a floating-point tensor of shape :math:`(*, 3, H, W)` with finite values.

    Example:
        >>> lab = rgb_to_lab(torch.rand(2, 3, 4, 5))
        >>> lab.shape
        torch.Size([2, 3, 4, 5])
        >>> rgb_to_lab(torch.ones(1, 3, 1, 1))[0, 0].round(decimals=3)  # white has L = 100
        tensor([[100.]])
    """
    _check_image(image, 'image')
    return rgb_to_lab_unchecked(image)


def lab_to_rgb(image: Tensor, clip: bool = True) -> Tensor:
    r"""Convert CIE Lab images (D65 white, 2° observer) to sRGB, as ``skimage.color.lab2rgb`` does.

    Not every Lab triple is a colour a screen can show. Like skimage, a negative ``z`` is set to zero on the
    way to XYZ, and with ``clip=True`` the sRGB result is clipped to :math:`[0, 1]`. L outside
    :math:`[0, 100]` is accepted: it is just out of gamut.

    Args:
        image: Lab, shape :math:`(*, 3, H, W)`, any floating dtype.
        clip: clip the result to :math:`[0, 1]` (skimage always does). ``False`` returns the unclipped
            values, e.g. to measure how far out of gamut a prediction is.

    Returns:
        Gamma-encoded sRGB, shape :math:`(*, 3, H, W)`, same dtype and device, in :math:`[0, 1]` if ``clip``.

    Raises:
        InputError: ``image`` is not a floating-point tensor of shape :math:`(*, 3, H, W)` with finite values.

    Example:
        >>> lab = torch.tensor([50.0, 0.0, 0.0]).view(1, 3, 1, 1)  # mid grey
        >>> lab_to_rgb(lab).flatten().round(decimals=4)
        tensor([0.4663, 0.4663, 0.4663])
    """
    _check_image(image, 'image')
    return lab_to_rgb_unchecked(image, clip)


def _srgb_to_linear(image: Tensor) -> Tensor:
    # Undo the sRGB gamma: linear below the knee, a 2.4 power above. torch.where evaluates both branches, so
    # the power only sees values above the knee: otherwise it could produce NaN and leak NaN gradients.
    knee = 0.04045
    power = ((image.clamp_min(knee) + 0.055) / 1.055).pow(2.4)
    return torch.where(image > knee, power, image / 12.92)


def _lab_f(t: Tensor) -> Tensor:
    # CIE's f(t): a cube root, with a straight line near black where the cube root is too steep.
    # 0.008856 and 7.787 are skimage's rounded constants (exactly 216/24389 and 841/108).
    threshold = 0.008856
    return torch.where(t > threshold, t.clamp_min(threshold).pow(1.0 / 3.0), 7.787 * t + 16.0 / 116.0)


def rgb_to_lightness_unchecked(image: Tensor) -> Tensor:
    """L of ``rgb_to_lab`` alone, (*, 1, H, W), without input checks: Y needs one row of the matrix and one
    f(t) instead of three, which is all ``colorize`` needs at full resolution."""
    linear_rgb = _srgb_to_linear(image)
    # Row Y of the sRGB -> XYZ matrix below (the D65 white has Y = 1).
    y = 0.212671 * linear_rgb[..., 0:1, :, :] + 0.715160 * linear_rgb[..., 1:2, :, :] \
        + 0.072169 * linear_rgb[..., 2:3, :, :]
    return 116.0 * _lab_f(y) - 16.0


def rgb_to_lab_unchecked(image: Tensor) -> Tensor:
    """``rgb_to_lab`` without input checks, for use inside ``forward``."""
    linear_rgb = _srgb_to_linear(image)

    # The sRGB -> XYZ matrix of the sRGB specification, as skimage writes it, each row divided by the XYZ of
    # the D65 white for the 2° observer (skimage's historical ``lab_ref_white``): one 3x3 product, one pass.
    xyz_from_rgb = torch.tensor(
        [
            [0.412453, 0.357580, 0.180423],
            [0.212671, 0.715160, 0.072169],
            [0.019334, 0.119193, 0.950227],
        ],
        device=image.device,
        dtype=image.dtype,
    )
    white = torch.tensor([0.95047, 1.0, 1.08883], device=image.device, dtype=image.dtype)
    pixels = linear_rgb.reshape(image.shape[:-2] + (-1,))  # (*, 3, H*W): channels mixed by matmul
    xyz = torch.matmul(xyz_from_rgb / white[:, None], pixels)

    f = _lab_f(xyz)

    # L = 116 fy - 16, a = 500 (fx - fy), b = 200 (fy - fz): again one 3x3 product.
    lab_from_f = torch.tensor(
        [[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]], device=image.device, dtype=image.dtype)
    offset = torch.tensor([-16.0, 0.0, 0.0], device=image.device, dtype=image.dtype)
    return (torch.matmul(lab_from_f, f) + offset[:, None]).reshape(image.shape)


def lab_to_rgb_unchecked(image: Tensor, clip: bool = True) -> Tensor:
    """``lab_to_rgb`` without input checks, for use inside ``forward``."""
    lightness = image[..., 0, :, :]
    a = image[..., 1, :, :]
    b = image[..., 2, :, :]
    fy = (lightness + 16.0) / 116.0
    fx = a / 500.0 + fy
    # skimage sets negative z to zero (very large b); x is left as it is. Copied so the outputs agree.
    fz = (fy - b / 200.0).clamp_min(0.0)
    f = torch.stack([fx, fy, fz], dim=-3)

    # Inverse of f(t); 0.2068966 is skimage's rounding of 6/29, where the two branches meet.
    xyz = torch.where(f > 0.2068966, f.pow(3.0), (f - 16.0 / 116.0) / 7.787)
    white = torch.tensor([0.95047, 1.0, 1.08883], device=image.device, dtype=image.dtype)  # D65, as above
    xyz = xyz * white[:, None, None]

    # The inverse of the matrix in rgb_to_lab_unchecked, to double precision (scipy.linalg.inv, as skimage computes it).
    # Written out because torch cannot invert a matrix in bfloat16 or float16.
    rgb_from_xyz = torch.tensor(
        [
            [3.2404813432005266, -1.5371515162713183, -0.4985363261688878],
            [-0.9692549499965682, 1.8759900014898907, 0.04155592655829284],
            [0.055646639135177166, -0.20404133836651123, 1.0573110696453443],
        ],
        device=image.device,
        dtype=image.dtype,
    )
    linear_rgb = torch.einsum('ij,...jhw->...ihw', rgb_from_xyz, xyz)

    # Apply the sRGB gamma; as above, the power branch only sees values where it is used.
    knee = 0.0031308
    power = 1.055 * linear_rgb.clamp_min(knee).pow(1.0 / 2.4) - 0.055
    rgb = torch.where(linear_rgb > knee, power, 12.92 * linear_rgb)
    if clip:
        rgb = rgb.clamp(0.0, 1.0)
    return rgb


def _check_image(image: object, name: str) -> None:
    """Raise ``InputError`` unless ``image`` is a finite floating-point tensor of shape ``(*, 3, H, W)``."""
    if not isinstance(image, Tensor):
        raise InputError(f'{name}: expected a torch.Tensor, got {type(image).__name__}')
    if not image.is_floating_point():
        raise InputError(f'{name}: expected a floating-point dtype, got {image.dtype}')
    if image.ndim < 3 or image.shape[-3] != 3:
        raise InputError(f'{name}: expected shape (*, 3, H, W), got {tuple(image.shape)}')
    if not torch.isfinite(image).all():
        raise InputError(f'{name}: expected finite values, got NaN or infinity')
