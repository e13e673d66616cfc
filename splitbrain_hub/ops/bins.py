"""The paper's classification targets: quantised ab and L, their encodings, rebalancing and the annealed mean.

For the classification losses (section 4.1) a target channel is quantised and each pixel becomes a
distribution over bins, following Zhang et al., "Colorful Image Colorization" (ECCV 2016):

- ab: a grid of step ``AB_GRID_SIZE`` = 10, keeping only the cells some sRGB colour falls into (the in-gamut
  set, ``ab_bin_centers``). The paper quotes 313 bins from Zhang et al.'s own gamut procedure; binning every
  8-bit sRGB colour gives ``ab_bin_count()`` = 261.
- L: ``L_BIN_COUNT`` = 50 bins of width 2 over [0, 100] (``l_bin_centers``).

Every function takes the bin centres as a ``(Q, C)`` tensor, so the same code serves ab (C = 2) and L (C = 1).
Targets are ``(N, C, H, W)`` values; distributions and logits are ``(N, Q, H, W)``.

The in-gamut ab set takes seconds to compute, so it ships as ``ab_bins.json`` next to this file;
``python -m splitbrain_hub.ops.bins`` regenerates it.
"""

import functools
import json
import math
from pathlib import Path

import torch
from torch import Tensor

from ..errors import InputError
from .color import rgb_to_lab_unchecked

__all__ = ['AB_GRID_SIZE', 'DEFAULT_TEMPERATURE', 'L_BIN_COUNT', 'L_BIN_WIDTH', 'ab_bin_centers', 'ab_bin_count',
           'annealed_mean', 'annealed_mean_from_logits', 'annealed_mean_from_logits_unchecked', 'hard_encode',
           'l_bin_centers', 'rebalance_weights', 'soft_encode', 'write_ab_bin_centers']

AB_GRID_SIZE = 10
L_BIN_COUNT = 50
L_BIN_WIDTH = 2.0
# The paper's annealed-mean temperature: between the mean (T = 1, desaturated) and the mode (T -> 0, patchy).
DEFAULT_TEMPERATURE = 0.38
# hard_encode measures the distance to every centre for this many pixels at a time: (pixels, Q) floats.
ENCODE_PIXELS = 1 << 16

_AB_BINS_PATH = Path(__file__).with_name('ab_bins.json')


def ab_bin_centers(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""The in-gamut ab bin centres: every multiple of ``AB_GRID_SIZE`` that is nearest to some sRGB colour.

    Returns:
        Centres ``(a, b)``, shape :math:`(Q, 2)`, sorted by a then b.

    Example:
        >>> centers = ab_bin_centers()
        >>> centers.shape
        torch.Size([261, 2])
        >>> centers[:2]
        tensor([[-90.,  80.],
                [-80.,  40.]])
    """
    return torch.tensor(_load_ab_bin_centers(), device=device, dtype=dtype)


def ab_bin_count() -> int:
    """Q, the number of in-gamut ab bins (261): the number of classes of the colorisation head."""
    return len(_load_ab_bin_centers())


def l_bin_centers(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""The centres of the ``L_BIN_COUNT`` lightness bins of width 2 over [0, 100].

    Returns:
        Centres 1, 3, ..., 99, shape :math:`(50, 1)`.

    Example:
        >>> l_bin_centers()[[0, 1, -1]].flatten()
        tensor([ 1.,  3., 99.])
    """
    starts = torch.arange(L_BIN_COUNT, device=device, dtype=dtype) * L_BIN_WIDTH
    return (starts + L_BIN_WIDTH / 2).unsqueeze(1)


def soft_encode(values: Tensor, centers: Tensor, neighbours: int = 5, sigma: float = 5.0) -> Tensor:
    r"""Encode values as distributions over bins: Gaussian weights on the nearest bins (Zhang et al. 2016).

    Each pixel's mass goes to its ``neighbours`` nearest centres, weighted by
    :math:`\exp(-d^2 / 2\sigma^2)` and normalised to sum to 1. Soft targets keep the distance between
    neighbouring bins, which a one-hot target would throw away.

    Args:
        values: targets, shape :math:`(N, C, H, W)` (ab: C = 2, L: C = 1).
        centers: bin centres, shape :math:`(Q, C)`, in the units of ``values``.
        neighbours: how many nearest bins share each pixel's mass (1 to Q).
        sigma: width of the Gaussian, in the units of ``values``.

    Returns:
        Distributions, shape :math:`(N, Q, H, W)`, in the dtype and on the device of ``values``.

    Example:
        >>> ab = torch.tensor([3.0, -2.0]).view(1, 2, 1, 1)
        >>> encoded = soft_encode(ab, ab_bin_centers())
        >>> encoded.shape, round(encoded.sum().item(), 6), (encoded > 0).sum().item()
        (torch.Size([1, 261, 1, 1]), 1.0, 5)
    """
    _check_values(values, centers)
    if isinstance(neighbours, bool) or not isinstance(neighbours, int) or not 1 <= neighbours <= centers.shape[0]:
        raise InputError(f'neighbours: expected an integer in [1, {centers.shape[0]}], got {neighbours}')
    _check_positive(sigma, 'sigma')
    distances = _squared_distances(values, centers)
    nearest_distances, nearest = distances.topk(neighbours, dim=1, largest=False)
    # A softmax over -d²/2σ² is the normalised Gaussian, computed without underflow far from every centre.
    weights = torch.softmax(-nearest_distances / (2 * sigma**2), dim=1)
    return torch.zeros_like(distances).scatter(1, nearest, weights)


def hard_encode(values: Tensor, centers: Tensor) -> Tensor:
    r"""Index of each pixel's nearest bin: the class target for ``torch.nn.functional.cross_entropy``.

    Args:
        values: targets, shape :math:`(N, C, H, W)`.
        centers: bin centres, shape :math:`(Q, C)`.

    Returns:
        Bin indices in :math:`[0, Q)`, shape :math:`(N, H, W)`, int64.

    Example:
        >>> lightness = torch.tensor([0.5, 50.0, 100.0]).view(1, 1, 1, 3)
        >>> hard_encode(lightness, l_bin_centers())
        tensor([[[ 0, 24, 49]]])
    """
    _check_values(values, centers)
    # Pixels in chunks: all distances at once are (N, Q, H, W) floats, gigabytes for an evaluation batch.
    pixels = values.movedim(1, -1).reshape(-1, values.shape[1], 1, 1)  # (N*H*W, C, 1, 1)
    nearest = torch.empty(pixels.shape[0], dtype=torch.int64, device=values.device)
    for start in range(0, pixels.shape[0], ENCODE_PIXELS):
        chunk = pixels[start:start + ENCODE_PIXELS]
        nearest[start:start + len(chunk)] = _squared_distances(chunk, centers).argmin(dim=1).flatten()
    return nearest.reshape(values.shape[0], *values.shape[2:])


def rebalance_weights(histogram: Tensor, centers: Tensor, sigma: float = 5.0, lam: float = 0.5) -> Tensor:
    r"""Per-bin loss weights that boost rare bins (class rebalancing, Zhang et al. 2016).

    The empirical distribution :math:`p` (``histogram`` normalised) is smoothed into :math:`\tilde p` by a
    Gaussian of width ``sigma`` over the bin centres: each bin takes the Gaussian-weighted average of its
    neighbours, so a uniform histogram stays uniform. Then :math:`w \propto ((1 - \lambda)\tilde p +
    \lambda / Q)^{-1}`, scaled so that :math:`\sum_q \tilde p_q w_q = 1`: the loss keeps its scale on average.

    Args:
        histogram: how often each bin occurs in the training data, shape :math:`(Q,)`, non-negative.
        centers: bin centres, shape :math:`(Q, C)`; ``sigma`` is in their units.
        sigma: width of the smoothing Gaussian.
        lam: weight of the uniform distribution in the mix, in (0, 1]; 1 gives all weights 1.

    Returns:
        Weights, shape :math:`(Q,)`, in the dtype of ``centers``, on the device of ``histogram``.

    Example:
        >>> centers = l_bin_centers()
        >>> weights = rebalance_weights(torch.tensor([1.0] * 25 + [3.0] * 25), centers)
        >>> bool(weights[0] > weights[-1])  # the rarer bins weigh more
        True
    """
    _check_centers(centers)
    count = centers.shape[0]
    if not isinstance(histogram, Tensor):
        raise InputError(f'histogram: expected a torch.Tensor, got {type(histogram).__name__}')
    if histogram.shape != (count,):
        raise InputError(f'histogram: expected shape ({count},) to match centers, got {tuple(histogram.shape)}')
    _check_positive(sigma, 'sigma')
    if not 0 < lam <= 1:
        raise InputError(f'lam: expected a number in (0, 1], got {lam}')
    histogram = histogram.to(dtype=centers.dtype)
    if not torch.isfinite(histogram).all() or (histogram < 0).any():
        raise InputError('histogram: expected finite non-negative counts, got a negative, NaN or infinite one')
    total = histogram.sum()
    if total <= 0:
        raise InputError('histogram: expected a positive total, got all zeros')

    centers = centers.to(histogram.device)
    squared_distances = (centers[:, None, :] - centers[None, :, :]).square().sum(dim=2)
    kernel = torch.exp(-squared_distances / (2 * sigma**2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    smoothed = kernel @ (histogram / total)
    smoothed = smoothed / smoothed.sum()
    weights = 1 / ((1 - lam) * smoothed + lam / count)
    return weights / (smoothed * weights).sum()


def annealed_mean(probabilities: Tensor, centers: Tensor, temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    r"""Point estimate of a per-pixel distribution over bins: the annealed mean of Zhang et al. 2016.

    The distribution is sharpened, :math:`f_T(z) = \exp(\log z / T) / \sum_q \exp(\log z_q / T)`, and the
    expectation of the centres taken under it. :math:`T = 1` gives the mean (spatially coherent but
    desaturated), :math:`T \to 0` the mode (vivid but patchy); the paper's ``DEFAULT_TEMPERATURE`` sits between. Computed in log
    space, so zero probabilities and temperatures down to 0.01 stay finite.

    Args:
        probabilities: distributions over bins, shape :math:`(N, Q, H, W)`, non-negative.
        centers: bin centres, shape :math:`(Q, C)`.
        temperature: :math:`T > 0`.

    Returns:
        Point estimates, shape :math:`(N, C, H, W)`, in the dtype and on the device of ``probabilities``.

    Example:
        >>> centers = l_bin_centers()
        >>> probabilities = soft_encode(torch.full((1, 1, 2, 2), 42.0), centers)
        >>> annealed_mean(probabilities, centers, temperature=0.01).shape
        torch.Size([1, 1, 2, 2])
    """
    _check_distribution(probabilities, 'probabilities', centers)
    _check_positive(temperature, 'temperature')
    tiny = torch.finfo(probabilities.dtype).tiny
    # log p is a valid set of logits: softmax(log p / T) is exactly f_T(p).
    return annealed_mean_from_logits_unchecked(torch.log(probabilities.clamp_min(tiny)), centers, float(temperature))


def annealed_mean_from_logits(logits: Tensor, centers: Tensor, temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    r"""``annealed_mean`` of ``softmax(logits)``, straight from the network's logits.

    Args:
        logits: unnormalised log-probabilities over bins, shape :math:`(N, Q, H, W)`.
        centers: bin centres, shape :math:`(Q, C)`.
        temperature: :math:`T > 0`.

    Returns:
        Point estimates, shape :math:`(N, C, H, W)`, in the dtype and on the device of ``logits``.

    Example:
        >>> logits = torch.randn(2, ab_bin_count(), 4, 4)
        >>> annealed_mean_from_logits(logits, ab_bin_centers()).shape
        torch.Size([2, 2, 4, 4])
    """
    _check_distribution(logits, 'logits', centers)
    _check_positive(temperature, 'temperature')
    return annealed_mean_from_logits_unchecked(logits, centers, float(temperature))


def annealed_mean_from_logits_unchecked(logits: Tensor, centers: Tensor, temperature: float) -> Tensor:
    """``annealed_mean_from_logits`` without input checks, for use inside ``forward``."""
    # f_T(softmax(z)) = softmax(log_softmax(z) / T) = softmax(z / T): log_softmax only subtracts a constant
    # per pixel, which softmax ignores. So the logits are divided directly, with no softmax-then-log.
    weights = torch.softmax(logits / temperature, dim=1)
    centers = centers.to(device=logits.device, dtype=logits.dtype)
    return torch.einsum('nqhw,qc->nchw', weights, centers)


def compute_ab_bin_centers(chunk: int = 16) -> Tensor:
    """Compute the in-gamut ab set from scratch: bin all 256³ 8-bit sRGB colours, keep the occupied cells.

    Colours go through ``color.rgb_to_lab_unchecked`` in float64, ``chunk`` red levels (``chunk`` · 65536 colours)
    at a time. Takes a few seconds on a CPU, hence the cached ``ab_bins.json``.

    Returns:
        The distinct centres, shape :math:`(Q, 2)`, float64, sorted by a then b.
    """
    levels = torch.arange(256, dtype=torch.float64) / 255
    # sRGB's a and b stay well inside ±128, so every occupied cell is within `radius` steps of the origin.
    radius = math.ceil(128 / AB_GRID_SIZE)
    occupied = torch.zeros(2 * radius + 1, 2 * radius + 1, dtype=torch.bool)
    for start in range(0, 256, chunk):
        red, green, blue = torch.meshgrid(levels[start : start + chunk], levels, levels, indexing='ij')
        rgb = torch.stack([red, green, blue]).flatten(1).unsqueeze(-1)  # (3, colours, 1): one column image
        ab = rgb_to_lab_unchecked(rgb)[1:, :, 0]
        cells = torch.round(ab / AB_GRID_SIZE).to(torch.int64) + radius
        occupied[cells[0], cells[1]] = True
    # nonzero lists the cells row by row: sorted by a, then b.
    return (occupied.nonzero() - radius).to(torch.float64) * AB_GRID_SIZE


def write_ab_bin_centers(path: str | Path = _AB_BINS_PATH) -> None:
    """Recompute the in-gamut ab set and write it to ``path`` (by default the package's ``ab_bins.json``)."""
    centers = compute_ab_bin_centers().to(torch.int64).tolist()
    data = {
        'description': 'In-gamut ab bin centres (a, b): grid cells hit by some 8-bit sRGB colour.',
        'generated_by': 'python -m splitbrain_hub.ops.bins',
        'grid_size': AB_GRID_SIZE,
        'centers': centers,
    }
    Path(path).write_text(json.dumps(data) + '\n')


@functools.lru_cache(maxsize=1)
def _load_ab_bin_centers() -> tuple[tuple[int, int], ...]:
    # A tuple, immutable, so the cached value cannot be changed by a caller.
    data = json.loads(_AB_BINS_PATH.read_text())
    return tuple((a, b) for a, b in data['centers'])


def _squared_distances(values: Tensor, centers: Tensor) -> Tensor:
    """Squared distance from every pixel of ``values`` (N, C, H, W) to every centre (Q, C): (N, Q, H, W)."""
    centers = centers.to(device=values.device, dtype=values.dtype)
    # Differences, not the |x|² + |c|² - 2x·c expansion: exact, so the nearest bin is never mistaken.
    differences = values.unsqueeze(1) - centers[None, :, :, None, None]
    return differences.square().sum(dim=2)


def _check_centers(centers: object) -> None:
    if not isinstance(centers, Tensor):
        raise InputError(f'centers: expected a torch.Tensor, got {type(centers).__name__}')
    if not centers.is_floating_point() or centers.ndim != 2 or centers.shape[0] == 0:
        got = f'{centers.dtype} {tuple(centers.shape)}'
        raise InputError(f'centers: expected a floating-point (Q, C) tensor, got {got}')


def _check_values(values: object, centers: Tensor) -> None:
    """Targets: (N, C, H, W) with C the centres' dimension, finite."""
    _check_centers(centers)
    _check_batch(values, 'values', centers.shape[1])
    if not torch.isfinite(values).all():
        raise InputError('values: expected finite values, got NaN or infinity')


def _check_distribution(tensor: object, name: str, centers: Tensor) -> None:
    """Distributions or logits: (N, Q, H, W) with Q the number of centres."""
    _check_centers(centers)
    _check_batch(tensor, name, centers.shape[0])


def _check_batch(tensor: object, name: str, channels: int) -> None:
    if not isinstance(tensor, Tensor):
        raise InputError(f'{name}: expected a torch.Tensor, got {type(tensor).__name__}')
    if not tensor.is_floating_point():
        raise InputError(f'{name}: expected a floating-point dtype, got {tensor.dtype}')
    if tensor.ndim != 4 or tensor.shape[1] != channels:
        raise InputError(f'{name}: expected shape (N, {channels}, H, W) to match centers, got {tuple(tensor.shape)}')


def _check_positive(number: object, name: str) -> None:
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) or number <= 0:
        raise InputError(f'{name}: expected a finite number > 0, got {number!r}')


if __name__ == '__main__':
    write_ab_bin_centers()
