"""Images in, images (or features) out: colorize, predict_lightness, extract_features.

Both prediction functions are one operation, one half's prediction (``prediction.py``), read from a small
table (``CrossChannelTask``): a half that sees some Lab channels predicts the others. For ``colorize`` the
L half sees L at the network's input size, its ab distribution on the conv5 grid is decoded by the
annealed mean, upsampled to the original resolution and put back with the original full-resolution L,
so no detail of the photo is lost. ``predict_lightness`` is the ab half, the other way round. This module
checks the arguments, loads the images in batches and hands each result back in the kind it came in.

The default model (the shipped pretrained weights) is loaded once per device and cached; a weights file
is cached by its path, size and modification time, so a file replaced in place is loaded again.
"""
import functools
import math
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .hub.sources import DEFAULT_ARCHITECTURE
from .hub.storage import load_pretrained, weights_file
from .images import ImageBatch, load_batches, to_output
from .ops.bins import DEFAULT_TEMPERATURE
from .ops.precision import autocast, autocast_dtype, resolve_device
from .ops.upsample import DEFAULT_UPSAMPLE, Bilinear, Upsampler, resolve_upsampler
from .prediction import (
    COLORIZE,
    LIGHTNESS,
    SIZE_RANGE,
    CrossChannelTask,
    decode,
    full_resolution_lab,
    half_for,
    network_input,
    network_size,
    photo_network_size,
    photo_size_rule,
    recombine,
    resize,
    sides,
)

__all__ = ['colorize', 'predict_lightness', 'extract_features', 'load_model', 'resolve_device',
           'CrossChannelTask', 'COLORIZE', 'LIGHTNESS', 'FEATURE_LAYERS', 'DEFAULT_TEMPERATURE', 'SIZE_RANGE',
           'TEMPERATURE_RANGE']

# The network runs in bf16 by default only where what the user sees does not change: on every Kodak photo
# the 8-bit result stays within 1 level of fp32's (benchmarks/bench_precision.py). colorize keeps the photo's
# own L and passes; predict_lightness's L is the prediction itself and does not, so it stays fp32 unless asked.
COLORIZE_AMP = 'auto'
LIGHTNESS_AMP = 'off'
# Below 0.01 the annealed mean's softmax(logits / T) leaves float range; above 10 it is the plain mean.
TEMPERATURE_RANGE = (0.01, 10.0)
FEATURE_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')


# --- devices and the model cache ------------------------------------------------------------------

# (weights path or '' for the pretrained default, device) -> (the file's (size, mtime_ns) when loaded, model)
_model_cache: dict[tuple[str, str], tuple[tuple[int, int] | None, torch.nn.Module]] = {}
_model_cache_lock = threading.Lock()


def load_model(weights: str | Path | None = None, device: str | torch.device | None = None) -> torch.nn.Module:
    """The model the functions here use by default, in eval mode on ``device``, loaded once and cached.

    Args:
        weights: None for the pretrained ``splitbrain_alexnet`` (see ``splitbrain_hub.hub`` for where it is
            looked for; resolved once per process), or a ``save_pretrained`` folder, its ``model.safetensors``,
            or a bare ``.safetensors`` file of the default architecture (loaded again once it changes on disk).
        device: see ``resolve_device``.
    Raises:
        WeightsError: no weights found, or they do not fit the model.
    """
    device = resolve_device(device)
    key = (str(Path(weights).resolve()) if weights is not None else '', str(device))
    stamp = _file_stamp(Path(weights)) if weights is not None else None
    with _model_cache_lock:
        if key not in _model_cache or _model_cache[key][0] != stamp:
            _model_cache[key] = (stamp, _load_weights(weights).eval().to(device))
        return _model_cache[key][1]


def _file_stamp(weights: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of the weights file a path names (a folder: its model.safetensors), None if missing."""
    try:
        status = os.stat(weights_file(weights))
    except OSError:
        return None  # loading says what is missing
    return status.st_size, status.st_mtime_ns


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


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f'batch_size: expected an int >= 1, got {batch_size!r}')


# --- cross-channel prediction ---------------------------------------------------------------------

def _cross_channel(images: Any, task: CrossChannelTask, temperature: float, model: torch.nn.Module | None,
                   device, size, amp: str, upsample: Upsampler, batch_size: int) -> Any:
    """Check the arguments, then predict ``batch_size`` inputs at a time: a long list never holds more
    than one batch of full-resolution images in memory besides the results."""
    temperature = _check_temperature(temperature)
    upsample = resolve_upsampler(upsample)
    model, device = _model_and_device(model, device)
    amp_dtype = autocast_dtype(amp, device)
    half = half_for(model, task)
    size_rule = photo_size_rule(model, size)
    _check_batch_size(batch_size)
    predict = functools.partial(_predict_batch, task=task, temperature=temperature, model=model, device=device,
                                amp_dtype=amp_dtype, half=half, size_rule=size_rule, upsample=upsample)
    if not isinstance(images, (list, tuple)):
        return predict(load_batches(images))[0]
    outputs: list[Any] = []
    for start in range(0, max(len(images), 1), batch_size):  # an empty list: load_batches says so
        outputs += predict(load_batches(images[start:start + batch_size], start))
    return outputs


def _predict_batch(batches: list[ImageBatch], task: CrossChannelTask, temperature: float, model: torch.nn.Module,
                   device: torch.device, amp_dtype: torch.dtype | None, half: str, size_rule: int | tuple[int, int],
                   upsample: Upsampler) -> list[Any]:
    """``half`` over ``batches``, one forward pass per network size among them (photos of one aspect ratio
    share a pass); each result handed back as the kind its input came in."""
    dtype = next(model.parameters()).dtype
    with _evaluating(model, device):
        labs = [full_resolution_lab(batch, device, task) for batch in batches]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, lab in enumerate(labs):
            groups.setdefault(photo_network_size(*lab.shape[-2:], size_rule), []).append(i)
        predicted: list[torch.Tensor] = [torch.empty(0)] * len(labs)
        for size, members in groups.items():
            with autocast(device, amp_dtype):
                raw = model.forward_pretext(network_input([labs[i] for i in members], task, size).to(dtype),
                                            is_lab=True, halves=[half])[half]
            values = decode(raw, model.pretext_targets[half], task, temperature)
            for i, prediction in zip(members, values.split([labs[i].shape[0] for i in members])):
                predicted[i] = prediction
        results = [recombine(lab, prediction, task, upsample) for lab, prediction in zip(labs, predicted)]
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
        size: the network's input: None, the short side at the model's pretrained input size (227 px weights
            see a 768x512 photo at 341x227); an int, that short side (both keep the aspect ratio, as torchvision's
            ``Resize(int)`` does); (height, width), exactly that.
        amp: the network's precision: 'auto' (bf16 where the CPU or GPU runs it natively), 'bf16' or 'off'
            (fp32). Colour maths is fp32 either way, also inside a caller's ``torch.autocast``.
        upsample: how the coarse ab grid reaches the photo's resolution: 'guided' (a guided filter with
            the full-resolution L as guide: colour stops at the edges L shows), 'bilinear' (colour bleeds
            over edges inside a grid cell), or a ``splitbrain_hub.ops.GuidedFilter(radius, eps)``.
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
        size: network input side(s), the same for every image so their features stack; None uses the model's
            pretrained input size.
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
    pool = None if pool is None else sides(pool, 'pool', 1)
    size = network_size(model, size)
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
            pixels.append(resize(batch.pixels.to(device).expand(-1, in_chans, -1, -1), size))
        network_input = _cat(pixels).to(dtype)
        for chunk in network_input.split(batch_size):
            with autocast(device, amp_dtype):
                maps = model.forward_intermediates(chunk, indices=indices, intermediates_only=True)
            for layer, feature_map in zip(layers, maps):
                outputs[layer].append(resize(feature_map.float(), pool) if pool else feature_map.float())
    # Outside inference mode, so the result is an ordinary tensor (usable with autograd, e.g. by a probe).
    return {layer: _cat(chunks) if len(chunks) > 1 else chunks[0].clone() for layer, chunks in outputs.items()}


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
