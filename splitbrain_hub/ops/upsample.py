"""Upsampling the network's coarse ab prediction to the photo, bilinearly or guided by the photo's own L.

The L half predicts ab on its conv5 grid, a few cells across whatever the photo's size (6x6 at a 128x128
input), so one cell of colour covers a large part of the photo. Bilinear interpolation spreads each cell's
colour evenly over it, across any object edge inside: colour bleeds.

The guided filter (He, Sun, Tang, "Guided Image Filtering", ECCV 2010) instead fits, in every window, the
output as a linear function of a guide image: q = a * I + b. With the full-resolution lightness as the
guide I and the ab prediction as the input p, ab can only change sharply where L does, so colour stops
at the edges L shows. The "fast guided filter" (He, Sun, arXiv:1505.00996, 2015) computes a and b on a
subsampled grid and upsamples only them: full resolution costs one area mean of the guide, a bilinear
upsampling of (a, b) and one multiply-add, a few times bilinear's cost (``benchmarks/bench_colorize.py``).

Here the subsampled grid is the ab grid itself (the guide is averaged over each cell's part of the photo),
so the window radius is counted in ab-grid cells: the colour blur to undo is one cell wide at any photo size.

Everything is plain torch on the inputs' device, batched over images, and fp32 (float64 stays float64),
also inside a caller's ``torch.autocast``.
"""
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError
from .precision import autocast
from .tracing import in_traced_graph

__all__ = ['Bilinear', 'GuidedFilter', 'UPSAMPLERS', 'DEFAULT_UPSAMPLE', 'guided_upsample', 'resolve_upsampler']


def _check_pair(source: Any, guide: Any) -> None:
    """``source`` (N, C, h, w) and ``guide`` (N, 1, H, W): floating tensors of one batch on one device."""
    for name, value in (('source', source), ('guide', guide)):
        if not isinstance(value, torch.Tensor) or value.ndim != 4 or not value.is_floating_point():
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(f'{name}: expected a floating point (N, C, H, W) tensor, got {shape}'
                             + (f' {value.dtype}' if isinstance(value, torch.Tensor) else ''))
    if guide.shape[1] != 1:
        raise InputError(f'guide: expected one channel (N, 1, H, W), got shape {tuple(guide.shape)}')
    if source.shape[0] != guide.shape[0]:
        raise InputError(f'source, guide: expected the same number of images, got {source.shape[0]} and '
                         f'{guide.shape[0]}')
    if source.device != guide.device:
        raise InputError(f'source, guide: expected one device, got {source.device} and {guide.device}')


def _check_radius_eps(radius: Any, eps: Any) -> None:
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise InputError(f'radius: expected an int >= 1 (cells), got {radius!r}')
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise InputError(f'eps: expected a finite number > 0, got {eps!r}')


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over the (2r+1)x(2r+1) window around each pixel, cut at the border (the paper's f_mean, 1/N)."""
    # Separable: the count of in-image pixels factorises into rows x columns, so two 1-D means are exact.
    # A window wider than the grid is the same as one just as wide; capping keeps avg_pool2d's padding legal.
    ry, rx = min(r, x.shape[-2] - 1), min(r, x.shape[-1] - 1)
    x = F.avg_pool2d(x, (2 * ry + 1, 1), stride=1, padding=(ry, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, 2 * rx + 1), stride=1, padding=(0, rx), count_include_pad=False)


def _cell_weights(cells: int, length: int, like: torch.Tensor) -> torch.Tensor:
    """(cells, length): row i averages the samples ``adaptive_avg_pool2d`` gives to cell i, [floor(i L / c),
    ceil((i + 1) L / c))."""
    index = torch.arange(cells, device=like.device)
    start = index * length // cells
    stop = ((index + 1) * length + cells - 1) // cells
    sample = torch.arange(length, device=like.device)
    inside = (sample >= start[:, None]) & (sample < stop[:, None])
    return inside.to(like.dtype) / (stop - start)[:, None].to(like.dtype)


def _cell_means(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)``; in a traced graph the same means (to rounding) as two matrix products,
    which export with a dynamic image size (ONNX has no adaptive pooling; torch's decomposition of it gathers
    out of range in onnxruntime)."""
    if not in_traced_graph():
        return F.adaptive_avg_pool2d(x, size)
    rows = _cell_weights(size[0], x.shape[-2], x)
    columns = _cell_weights(size[1], x.shape[-1], x)
    return torch.matmul(torch.matmul(rows, x), columns.transpose(0, 1))


def guided_upsample(source: torch.Tensor, guide: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """The fast guided filter: ``source`` (N, C, h, w) upsampled to ``guide``'s (N, 1, H, W) size, following it.

    Args:
        source: the coarse input p, e.g. ab on the network's grid.
        guide: the full-resolution guide I, scaled to about [0, 1] (``eps`` is in its units squared).
        radius: the window's half-side r in cells of ``source`` (>= 1).
        eps: the regularisation of a (> 0): a window whose guide varies by much less than sqrt(eps) is
            treated as flat (a ~ 0: q is the window's mean of p); above it q follows the guide.
    Returns:
        q (N, C, H, W) in ``source``'s floating type, at least fp32.
    """
    _check_pair(source, guide)
    _check_radius_eps(radius, eps)
    dtype = torch.promote_types(torch.promote_types(source.dtype, guide.dtype), torch.float32)
    with autocast(guide.device, None):
        I = guide.to(dtype)  # noqa: E741  (I and p: the names of He et al.'s guided filter)
        p = source.to(dtype)
        # The fit runs on the source's own cells, each paired with the mean guide over the photo region it
        # covers. Interpolated samples between cells add no information and dilute the fit: on a step edge,
        # working on 2 to 8 samples per cell left about 7x the colour error of 1 sample per cell.
        I_low = _cell_means(I, p.shape[-2:])
        channels = p.shape[1]
        means = _box(torch.cat([I_low, I_low * I_low, p, I_low * p], dim=1), radius)
        mean_I, mean_II = means[:, :1], means[:, 1:2]
        mean_p, mean_Ip = means[:, 2:2 + channels], means[:, 2 + channels:]
        var_I = mean_II - mean_I * mean_I
        cov_Ip = mean_Ip - mean_I * mean_p
        a = cov_Ip / (var_I + eps)
        b = mean_p - a * mean_I
        # Every cell lies in several windows: average their (a, b); only these go to full resolution.
        mean_a, mean_b = F.interpolate(_box(torch.cat([a, b], dim=1), radius), size=guide.shape[-2:],
                                       mode='bilinear', align_corners=False).split(channels, dim=1)
        return torch.addcmul(mean_b, mean_a, I)


@dataclass(frozen=True)
class Bilinear:
    """ab interpolated bilinearly to the photo (the colour of a cell spreads over its edges)."""

    def __call__(self, ab: torch.Tensor, lightness: torch.Tensor) -> torch.Tensor:
        """ab (N, 2, h, w) -> (N, 2, H, W) for ``lightness`` (N, 1, H, W), which only gives the size."""
        _check_pair(ab, lightness)
        return F.interpolate(ab.to(torch.promote_types(ab.dtype, torch.float32)), size=lightness.shape[-2:],
                             mode='bilinear', align_corners=False)


@dataclass(frozen=True)
class GuidedFilter:
    """ab upsampled by the fast guided filter with the photo's full-resolution L as the guide.

    Attributes:
        radius: window half-side in ab-grid cells (1: 3x3 cells).
        eps: regularisation in (L / 100)^2: 1e-3 is an L standard deviation of about 3 within a window.
    """
    radius: int = 1
    eps: float = 1e-3

    def __post_init__(self) -> None:
        _check_radius_eps(self.radius, self.eps)

    def __call__(self, ab: torch.Tensor, lightness: torch.Tensor) -> torch.Tensor:
        """ab (N, 2, h, w) -> (N, 2, H, W) following ``lightness`` (N, 1, H, W), L in [0, 100]."""
        _check_pair(ab, lightness)
        return guided_upsample(ab, lightness / 100, self.radius, self.eps)


UPSAMPLERS = {'guided': GuidedFilter(), 'bilinear': Bilinear()}
# Chosen on the Kodak photos (results/upsampling_grid_kodak.md): the guided filter with radius 1 and eps 1e-3
# scores above bilinear on AuC, rebalanced AuC and PSNR at about the same chroma; larger eps or radius fade the colour.
DEFAULT_UPSAMPLE = 'guided'

Upsampler = str | Bilinear | GuidedFilter


def resolve_upsampler(upsample: Any) -> Bilinear | GuidedFilter:
    """A name from ``UPSAMPLERS`` or an upsampler instance -> the instance."""
    if isinstance(upsample, (Bilinear, GuidedFilter)):
        return upsample
    if isinstance(upsample, str) and upsample in UPSAMPLERS:
        return UPSAMPLERS[upsample]
    raise InputError(f'upsample: expected one of {tuple(UPSAMPLERS)} or a Bilinear / GuidedFilter instance, '
                     f'got {upsample!r}')
