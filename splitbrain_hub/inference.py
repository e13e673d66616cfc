"""Images in, images (or features) out: colorize, predict_lightness, extract_features.

Both prediction functions are one operation, cross-channel prediction, read from a small table
(``CrossChannelTask``): a half that sees some Lab channels predicts the others. For ``colorize`` the
L half sees L at the network's input size, its ab distribution on the conv5 grid is decoded by the
annealed mean, upsampled to the original resolution and put back with the original full-resolution L,
so no detail of the photo is lost. ``predict_lightness`` is the ab half, the other way round.

How a head's output is decoded follows the model's pretext target (``PRETEXT_TARGETS``): classification
heads give logits over bins (annealed mean over the bin centres of the channels they quantise),
regression heads give the channels / ``REGRESSION_SCALE``. So the (reg) variants work unchanged.

The default model (the shipped pretrained weights) is loaded once per device and cached.
"""
import functools
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .color import _in_traced_graph, _lab_to_rgb, _rgb_to_lab, _rgb_to_lightness
from .errors import InputError
from .images import ImageBatch, load_batches, to_output
from .models.splitbrain_alexnet import PRETEXT_TARGETS, REGRESSION_SCALE
from .precision import autocast, autocast_dtype
from .quantize import _annealed_mean_from_logits, ab_bin_centers, l_bin_centers
from .upsample import DEFAULT_UPSAMPLE, Bilinear, Upsampler, resolve_upsampler
from .weights import DEFAULT_ARCHITECTURE, load_pretrained

__all__ = ['colorize', 'predict_lightness', 'extract_features', 'load_model', 'resolve_device',
           'CrossChannelTask', 'COLORIZE', 'LIGHTNESS', 'FEATURE_LAYERS']

DEFAULT_TEMPERATURE = 0.38
# The network runs in bf16 by default only where what the user sees does not change: on every Kodak photo
# the 8-bit result within 1 level of fp32's on >= 99.9 % of values (benchmarks/bench_precision.py). colorize
# keeps the photo's own L and passes (100 % within 1 level); predict_lightness's L is the prediction itself
# and does not (worst photo 99.39 %), so it stays fp32 unless asked.
COLORIZE_AMP = 'auto'
LIGHTNESS_AMP = 'off'
# Below 0.01 the annealed mean's softmax(logits / T) leaves float range; above 10 it is the plain mean.
TEMPERATURE_RANGE = (0.01, 10.0)
# The network's own floor (conv5 grid about 1x1 at 96 px) and a ceiling that keeps memory bounded.
SIZE_RANGE = (96, 2048)
FEATURE_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')
# Full-resolution colour maths runs in stripes of this many pixels: each stripe's temporaries stay in the
# CPU cache (about 2.3x faster than whole images at 1024x768 on one core; larger stripes mean fewer
# thread hand-offs when several threads run) and peak memory stays a few
# full-size channels however large the photo.
STRIPE_PIXELS = 1 << 18


@dataclass(frozen=True)
class CrossChannelTask:
    """One direction of the split brain, as data.

    Attributes:
        sees: Lab channels the half reads (at the network's input size).
        predicts: Lab channels taken from its prediction (upsampled to the original size).
        keeps: input Lab channels kept at full resolution in the result; other channels are 0.
        grey: the result has one channel (grey) instead of RGB.
    """
    sees: tuple[int, ...]
    predicts: tuple[int, ...]
    keeps: tuple[int, ...]
    grey: bool


COLORIZE = CrossChannelTask(sees=(0,), predicts=(1, 2), keeps=(0,), grey=False)
LIGHTNESS = CrossChannelTask(sees=(1, 2), predicts=(0,), keeps=(), grey=True)

# Bin centres of a classification target, by the Lab channels it quantises.
_BIN_CENTERS = {(1, 2): ab_bin_centers, (0,): l_bin_centers}


# --- devices and the model cache ------------------------------------------------------------------

def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; None picks CUDA, then Apple's MPS, then the CPU."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device('cuda')
        mps = getattr(torch.backends, 'mps', None)
        return torch.device('mps' if mps is not None and mps.is_available() else 'cpu')
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from e
    available = {'cuda': torch.cuda.is_available, 'mps': lambda: resolve_device(None).type == 'mps'}
    if device.type in available and not available[device.type]():
        raise InputError(f'device: expected an available device, got {str(device)!r} (not available here)')
    return device


_model_cache: dict[tuple[str, str], torch.nn.Module] = {}
_model_cache_lock = threading.Lock()


def load_model(weights: str | Path | None = None, device: str | torch.device | None = None) -> torch.nn.Module:
    """The model the functions here use by default, in eval mode on ``device``, loaded once and cached.

    Args:
        weights: None for the pretrained ``splitbrain_alexnet`` (see ``weights.py`` for where it is
            looked for), or a ``save_pretrained`` folder, its ``model.safetensors``, or a bare
            ``.safetensors`` file of the default architecture.
        device: see ``resolve_device``.
    Raises:
        WeightsError: no weights found, or they do not fit the model.
    """
    device = resolve_device(device)
    key = (str(Path(weights).resolve()) if weights is not None else '', str(device))
    with _model_cache_lock:
        if key not in _model_cache:
            _model_cache[key] = _load_weights(weights).eval().to(device)
        return _model_cache[key]


def _load_weights(weights: str | Path | None) -> torch.nn.Module:
    import timm
    if weights is None:
        return timm.create_model(DEFAULT_ARCHITECTURE, pretrained=True)
    return load_pretrained(weights)


def _model_and_device(model: torch.nn.Module | None, device) -> tuple[torch.nn.Module, torch.device]:
    if model is None:
        model = load_model(device=device)
    model_device = next(model.parameters()).device
    if device is not None and resolve_device(device) != model_device:
        raise InputError(f'device: expected the device the given model is on ({model_device}), got {device!r}')
    return model, model_device


@contextmanager
def _evaluating(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode (no dropout) for the call, the caller's mode restored after; fp32 even inside a caller's
    autocast (the package picks its own precision: only the network runs in ``amp``'s dtype)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device, None):
            yield
    finally:
        model.train(was_training)


# --- argument checks ------------------------------------------------------------------------------

def _check_temperature(temperature: Any) -> float:
    low, high = TEMPERATURE_RANGE
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or not low <= temperature <= high:
        raise InputError(f'temperature: expected a number in [{low}, {high}], got {temperature!r}')
    return float(temperature)


def _sides(value: Any, what: str, low: int, high: int | None = None) -> tuple[int, int]:
    """An int or (height, width) of ints in [low, high] (no upper bound when ``high`` is None) -> (height, width)."""
    sides = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(sides) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and low <= s
                                  and (high is None or s <= high) for s in sides):
        bounds = f'in [{low}, {high}]' if high is not None else f'>= {low}'
        raise InputError(f'{what}: expected None, an int or (height, width) with sides {bounds}, got {value!r}')
    return sides


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f'batch_size: expected an int >= 1, got {batch_size!r}')


def _network_size(model: torch.nn.Module, size: Any) -> tuple[int, int]:
    """``size`` (None: the model's pretrained input size; an int; or (height, width)) checked."""
    if size is None:
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        return tuple(cfg.get('input_size', (3, 227, 227))[-2:])
    return _sides(size, 'size', *SIZE_RANGE)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if not _in_traced_graph() and tuple(x.shape[-2:]) == tuple(size):  # a graph must not fix the input size
        return x
    # Antialiased when shrinking, so a large photo's fine texture does not alias into the network input.
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False, antialias=True)


# --- cross-channel prediction ---------------------------------------------------------------------

def _half_for(model: torch.nn.Module, task: CrossChannelTask) -> str:
    """The half that sees ``task.sees`` and has a pretext head predicting ``task.predicts``."""
    for name, target_name in getattr(model, 'pretext_targets', {}).items():
        if tuple(model.halves[name]) == task.sees and set(task.predicts) <= set(PRETEXT_TARGETS[target_name].channels):
            return name
    raise InputError(
        f'model: expected a half seeing Lab channels {task.sees} with a pretext head predicting {task.predicts}, '
        f'got halves {getattr(model, "halves", None)} with pretext {getattr(model, "pretext_targets", None)}')


def _decode(model: torch.nn.Module, half: str, raw: torch.Tensor, task: CrossChannelTask,
            temperature: float | torch.Tensor) -> torch.Tensor:
    """A pretext head's raw output -> the Lab values of ``task.predicts`` on the conv5 grid.

    ``temperature`` is checked by the caller; a scalar tensor keeps it an input of an exported graph.
    """
    target = PRETEXT_TARGETS[model.pretext_targets[half]]
    raw = raw.float()
    if target.classification:
        values = _annealed_mean_from_logits(raw, _BIN_CENTERS[target.channels](raw.device), temperature)
    else:
        values = raw * REGRESSION_SCALE
    return values[:, [target.channels.index(c) for c in task.predicts]]


def _stripes(shape: torch.Size) -> Iterator[slice]:
    """Row ranges of about ``STRIPE_PIXELS`` pixels (over the batch) covering an (N, C, H, W) image; all rows
    at once in a traced graph (see ``_in_traced_graph``): a stripe's numbers do not depend on its rows."""
    batch, _, height, width = shape
    if _in_traced_graph():
        return iter([slice(0, height)])
    rows = max(1, STRIPE_PIXELS // (batch * width))
    return (slice(start, start + rows) for start in range(0, height, rows))


def _full_resolution_lab(batch: ImageBatch, device: torch.device, task: CrossChannelTask) -> torch.Tensor:
    """Lab of the photo at its own resolution; only L (a = b = 0) when the task needs no other channel of
    the input (colorize: it sees and keeps L), which saves two thirds of the conversion."""
    pixels = batch.pixels.to(device)
    lab = pixels.new_zeros(pixels.shape[0], 3, *pixels.shape[2:])
    lightness_only = set(task.sees + task.keeps) == {0}
    for rows in _stripes(lab.shape):
        rgb = pixels[:, :, rows].expand(-1, 3, -1, -1)
        if lightness_only:
            lab[:, :1, rows] = _rgb_to_lightness(rgb)
        else:
            lab[:, :, rows] = _rgb_to_lab(rgb)
    return lab


def _recombine(lab: torch.Tensor, prediction: torch.Tensor, task: CrossChannelTask, upsample) -> torch.Tensor:
    """The result at full resolution: kept input channels, upsampled predicted ones, others 0 -> RGB/grey.

    ``upsample(prediction, guide)`` brings the prediction to full resolution; the guide is the first channel
    the half sees, at full resolution (L for colorize). Overwrites ``lab``, which is no longer needed.
    """
    lab[:, list(task.predicts)] = upsample(prediction, lab[:, task.sees[:1]])
    lab[:, [c for c in range(3) if c not in task.keeps + task.predicts]] = 0
    out = lab.new_empty(lab.shape[0], 1 if task.grey else 3, *lab.shape[2:])
    for rows in _stripes(lab.shape):
        out[:, :, rows] = _lab_to_rgb(lab[:, :, rows])[:, :out.shape[1]]
    return out


def _cross_channel(images: Any, task: CrossChannelTask, temperature: float, model: torch.nn.Module | None,
                   device, size, amp: str, upsample: Upsampler, batch_size: int) -> Any:
    """Check the arguments, then predict ``batch_size`` inputs at a time: a long list never holds more
    than one batch of full-resolution images in memory besides the results."""
    temperature = _check_temperature(temperature)
    upsample = resolve_upsampler(upsample)
    model, device = _model_and_device(model, device)
    amp_dtype = autocast_dtype(amp, device)
    half = _half_for(model, task)
    size = _network_size(model, size)
    _check_batch_size(batch_size)
    predict = functools.partial(_predict_batch, task=task, temperature=temperature, model=model, device=device,
                                amp_dtype=amp_dtype, half=half, size=size, upsample=upsample)
    if not isinstance(images, (list, tuple)):
        return predict(load_batches(images))[0]
    outputs: list[Any] = []
    for start in range(0, max(len(images), 1), batch_size):  # an empty list: load_batches says so
        outputs += predict(load_batches(images[start:start + batch_size], start))
    return outputs


def _predict_batch(batches: list[ImageBatch], task: CrossChannelTask, temperature: float, model: torch.nn.Module,
                   device: torch.device, amp_dtype: torch.dtype | None, half: str, size: tuple[int, int],
                   upsample: Upsampler) -> list[Any]:
    """One forward pass of ``half`` over ``batches``; each result handed back as the kind its input came in."""
    dtype = next(model.parameters()).dtype
    sees = list(task.sees)
    with _evaluating(model, device):
        labs = [_full_resolution_lab(batch, device, task) for batch in batches]
        # The network input: the seen channels at the network size, the others zero (the half ignores them).
        network_input = torch.cat([lab.new_zeros(lab.shape[0], 3, *size) for lab in labs])
        network_input[:, sees] = torch.cat([_resize(lab[:, sees], size) for lab in labs])
        with autocast(device, amp_dtype):
            raw = model.forward_pretext(network_input.to(dtype), is_lab=True, halves=[half])[half]
        predicted = _decode(model, half, raw, task, temperature).split([lab.shape[0] for lab in labs])
        results = [_recombine(lab, prediction, task, upsample) for lab, prediction in zip(labs, predicted)]
    # A returned tensor must be usable with autograd like any other: cloned outside inference mode.
    return [to_output(result.clone() if batch.kind == 'tensor' else result, batch)
            for result, batch in zip(results, batches)]


def colorize(image: Any, *, temperature: float = DEFAULT_TEMPERATURE, model: torch.nn.Module | None = None,
             device: str | torch.device | None = None, size: int | tuple[int, int] | None = None,
             amp: str = COLORIZE_AMP, upsample: Upsampler = DEFAULT_UPSAMPLE, batch_size: int = 16) -> Any:
    """Colorize photos from their lightness alone (the L half of the split brain).

    The L half sees L at the network's input size; its ab distribution is decoded by the annealed
    mean, upsampled to the original resolution (guided by the full-resolution L unless asked otherwise)
    and recombined with the original full-resolution L. A colour photo's own colours are never used;
    alpha is kept.

    Args:
        image: a path, a PIL image (modes L, LA, P, RGB, RGBA, CMYK, I;16...), an HxW or HxWxC
            uint8 / uint16 / float ([0, 1]) numpy array, a CxHxW or NxCxHxW uint8 / float tensor;
            or a list of these.
        temperature: annealed-mean temperature in [0.01, 10]: lower is more vivid, higher more sober.
        model: a ``SplitBrainAlexNet`` with an L half predicting ab; None loads the pretrained one.
        device: None picks CUDA, then MPS, then the CPU (or the given model's device).
        size: network input side(s); None uses the model's pretrained input size.
        amp: the network's precision: 'auto' (bf16 where the CPU or GPU runs it natively), 'bf16' or 'off'
            (fp32). Colour maths is fp32 either way, also inside a caller's ``torch.autocast``.
        upsample: how the coarse ab grid reaches the photo's resolution: 'guided' (a guided filter with
            the full-resolution L as guide: colour stops at the edges L shows), 'bilinear' (colour bleeds
            over edges inside a grid cell), or a ``splitbrain_hub.upsample.GuidedFilter(radius, eps)``.
        batch_size: inputs of a list per forward pass; a batch is read, predicted and handed back before
            the next is read, so memory holds one batch of full-resolution images, not the whole list.
    Returns:
        The same kind as given, RGB (RGBA with alpha): PIL for PIL and paths, an array of the input's
        dtype, a tensor of the input's dtype, device and rank; a list for a list.
    Raises:
        InputError: an unusable image or argument (see ``images.py``).
        WeightsError: ``model`` is None and no pretrained weights are found.
    """
    return _cross_channel(image, COLORIZE, temperature, model, device, size, amp, upsample, batch_size)


def predict_lightness(image: Any, *, temperature: float = DEFAULT_TEMPERATURE, model: torch.nn.Module | None = None,
                      device: str | torch.device | None = None, size: int | tuple[int, int] | None = None,
                      amp: str = LIGHTNESS_AMP, batch_size: int = 16) -> Any:
    """Predict lightness from colour alone (the ab half): the paper's grayscale-prediction task.

    Same inputs and arguments (``batch_size`` too) as ``colorize`` but no ``upsample`` (bilinear here), and
    ``amp`` defaults to 'off' (fp32): in bf16 the predicted L moves some pixels by 2 levels. Returns a greyscale
    image at the original resolution (PIL mode L / LA, an HxW (or HxWx1 / HxWx2) array, a 1- or 2-channel tensor).
    """
    # Bilinear only: the guided filter takes a one-channel guide, and this half sees two (a and b).
    return _cross_channel(image, LIGHTNESS, temperature, model, device, size, amp, Bilinear(), batch_size)


# --- features -------------------------------------------------------------------------------------

def _layer_indices(model: torch.nn.Module, layers: Sequence[str]) -> list[int]:
    names = [info['module'] for info in model.feature_info]
    if isinstance(layers, str) or not layers or len(set(layers)) != len(layers) or not set(layers) <= set(names):
        raise InputError(f'layers: expected distinct names from {names}, got {layers!r}')
    return [names.index(layer) for layer in layers]




def extract_features(images: Any, layers: Sequence[str] = FEATURE_LAYERS, *, pool: int | tuple[int, int] | None = None,
                     size: int | tuple[int, int] | None = None, model: torch.nn.Module | None = None,
                     device: str | torch.device | None = None, batch_size: int = 64,
                     amp: str = 'off') -> dict[str, torch.Tensor]:
    """Frozen features of both halves (concatenated) per layer, as the paper's linear probes read them.

    Args:
        images: as ``colorize``; every image is resized to ``size`` (grey is repeated to RGB).
        layers: names from ``FEATURE_LAYERS`` (conv1..conv5, after ReLU).
        pool: None returns the maps; an int or (height, width) resizes each map bilinearly (antialiased)
            to that grid, the linear-probe protocol.
        size: network input side(s); None uses the model's pretrained input size.
        model, device: as ``colorize``.
        batch_size: images per forward pass.
        amp: the network's precision: 'off' (fp32, the default: features are data for further maths),
            'bf16', or 'auto' (bf16 where the CPU or GPU runs it natively). Results are float32 either way.
    Returns:
        layer name -> float32 tensor (N, C, h, w) on the model's device, N = number of images in order,
        in channels_last memory layout (how the convolutions ran; ``.contiguous()`` gives plain NCHW).
    """
    model, device = _model_and_device(model, device)
    amp_dtype = autocast_dtype(amp, device)
    indices = _layer_indices(model, layers)
    pool = None if pool is None else _sides(pool, 'pool', 1)
    size = _network_size(model, size)
    _check_batch_size(batch_size)
    in_chans = getattr(model, 'in_chans', 3)
    batches = load_batches(images)
    dtype = next(model.parameters()).dtype
    outputs: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    with _evaluating(model, device):
        pixels = []
        for batch in batches:
            if batch.pixels.shape[1] > in_chans:
                raise InputError(f'{batch.name}: expected {in_chans}-channel (grey) input for this model, got RGB')
            pixels.append(_resize(batch.pixels.to(device).expand(-1, in_chans, -1, -1), size))
        network_input = _cat(pixels).to(dtype)
        for chunk in network_input.split(batch_size):
            with autocast(device, amp_dtype):
                maps = model.forward_intermediates(chunk, indices=indices, intermediates_only=True)
            for layer, feature_map in zip(layers, maps):
                outputs[layer].append(_resize(feature_map.float(), pool) if pool else feature_map.float())
    # Outside inference mode, so the result is an ordinary tensor (usable with autograd, e.g. by a probe).
    return {layer: _cat(chunks) if len(chunks) > 1 else chunks[0].clone() for layer, chunks in outputs.items()}


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
