"""One half's prediction, the one operation behind colorize, predict_lightness, the exported graphs and the service.

A half of the split brain sees some Lab channels and predicts the others (``CrossChannelTask``, as data).
Four steps, each a public function here, used alike by ``inference`` (images in, images out), the ONNX /
``torch.export`` graphs of ``deploy.export`` and, through ``inference``, the HTTP service:

1. ``full_resolution_lab`` and ``network_input``: the photo's Lab at its own size; the seen channels
   resized to the network size (antialiased), the others zero;
2. the half: ``model.forward_pretext(..., halves=[half_for(model, task)])``, or ``HalfPrediction``, a module
   holding that half's layers alone (what an exported file carries);
3. ``decode``: the pretext head's raw output -> Lab values on the conv5 grid, by the head's target
   (``PRETEXT_TARGETS``): classification heads give logits over bins (annealed mean over the bin centres),
   regression heads give the channels / ``REGRESSION_SCALE``; so the (reg) variants work unchanged;
4. ``recombine``: the prediction upsampled to the photo, the kept full-resolution channels put back, RGB out.

Everything is batched and unchecked (the callers check their arguments once); colour maths runs in stripes of
``PIXELS_PER_PASS`` pixels outside a traced graph, all at once inside one.
"""
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError
from .images import ImageBatch
from .models.splitbrain_alexnet import PRETEXT_TARGETS, REGRESSION_SCALE, SplitBrainAlexNet
from .ops.bins import ab_bin_centers, annealed_mean_from_logits_unchecked, l_bin_centers
from .ops.color import PIXELS_PER_PASS, lab_to_rgb_unchecked, rgb_to_lab_unchecked, rgb_to_lightness_unchecked
from .ops.tracing import in_traced_graph

__all__ = ['COLORIZE', 'LIGHTNESS', 'CrossChannelTask', 'HalfPrediction', 'SIZE_RANGE', 'decode',
           'full_resolution_lab', 'half_for', 'network_input', 'network_size', 'photo_network_size', 'photo_size_rule',
           'recombine', 'resize', 'sides']

# The network's own floor (conv5 grid about 1x1 at 96 px) and a ceiling that keeps memory bounded.
SIZE_RANGE = (96, 2048)


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
BIN_CENTERS = {(1, 2): ab_bin_centers, (0,): l_bin_centers}


# --- sizes ----------------------------------------------------------------------------------------

def sides(value: Any, what: str, low: int, high: int | None = None) -> tuple[int, int]:
    """An int or (height, width) of ints in [low, high] (no upper bound when ``high`` is None) -> (height, width).

    Raises:
        InputError: anything else, naming ``what``.
    """
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and low <= s
                                 and (high is None or s <= high) for s in pair):
        bounds = f'in [{low}, {high}]' if high is not None else f'>= {low}'
        raise InputError(f'{what}: expected None, an int or (height, width) with sides {bounds}, got {value!r}')
    return pair


def network_size(model: nn.Module, size: Any) -> tuple[int, int]:
    """``size`` (None: the model's pretrained input size; an int; or (height, width)) checked."""
    if size is None:
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        return tuple(cfg.get('input_size', (3, 227, 227))[-2:])
    return sides(size, 'size', *SIZE_RANGE)


def photo_size_rule(model: nn.Module, size: Any) -> int | tuple[int, int]:
    """What ``size`` asks of each photo: None, the model's pretrained input side as the short side; an int,
    that short side (both aspect-keeping, as torchvision's ``Resize(int)``); (height, width), exactly that.

    Raises:
        InputError: an int or side outside ``SIZE_RANGE``, or anything else.
    """
    if size is None:
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        return int(cfg.get('input_size', (3, 227, 227))[-1])
    if isinstance(size, int) and not isinstance(size, bool):
        return sides(size, 'size', *SIZE_RANGE)[0]
    return sides(size, 'size', *SIZE_RANGE)


def photo_network_size(height: Any, width: Any, rule: int | tuple[int, int]) -> tuple[Any, Any]:
    """The network size of one photo under ``rule`` (see ``photo_size_rule``).

    An int keeps the aspect ratio: the short side becomes ``rule`` and the long side follows, rounded half up (the
    conv5 grid of a 3:2 photo at 227 is 13x20 cells, not 13x13). Integer maths only, so the sides may be the
    symbolic sizes of a traced graph (``deploy.export``'s ``Prepare``) and give the same numbers there.

    Example:
        >>> photo_network_size(512, 768, 227)
        (227, 341)
    """
    if not isinstance(rule, int):
        return rule
    short = torch.sym_min(height, width)
    return (height * rule + short // 2) // short, (width * rule + short // 2) // short


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, *size), bilinear and antialiased (a large photo's fine texture must not alias)."""
    if not in_traced_graph() and tuple(x.shape[-2:]) == tuple(size):  # a graph must not fix the input size
        return x
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False, antialias=True)


# --- the four steps -------------------------------------------------------------------------------

def _stripes(shape: torch.Size) -> Iterator[slice]:
    """Row ranges of about ``PIXELS_PER_PASS`` pixels (over the batch) covering an (N, C, H, W) image; all rows
    at once in a traced graph (see ``in_traced_graph``): a stripe's numbers do not depend on its rows."""
    batch, _, height, width = shape
    if in_traced_graph():
        return iter([slice(0, height)])
    rows = max(1, PIXELS_PER_PASS // (batch * width))
    return (slice(start, start + rows) for start in range(0, height, rows))


def full_resolution_lab(batch: ImageBatch, device: torch.device, task: CrossChannelTask) -> torch.Tensor:
    """Lab (N, 3, H, W) of the photo at its own resolution; only L (a = b = 0) when the task needs no other
    channel of the input (colorize: it sees and keeps L), which saves two thirds of the conversion."""
    pixels = batch.pixels.to(device)
    lab = pixels.new_zeros(pixels.shape[0], 3, *pixels.shape[2:])
    lightness_only = set(task.sees + task.keeps) == {0}
    for rows in _stripes(lab.shape):
        rgb = pixels[:, :, rows].expand(-1, 3, -1, -1)
        if lightness_only:
            lab[:, :1, rows] = rgb_to_lightness_unchecked(rgb)
        else:
            lab[:, :, rows] = rgb_to_lab_unchecked(rgb)
    return lab


def network_input(labs: Sequence[torch.Tensor], task: CrossChannelTask, size: tuple[int, int]) -> torch.Tensor:
    """Full-resolution Labs (each (n, 3, H, W), any H, W) -> one (N, 3, *size) batch: the seen channels resized,
    the others zero (the half ignores them)."""
    sees = list(task.sees)
    batch = torch.cat([lab.new_zeros(lab.shape[0], 3, *size) for lab in labs])
    batch[:, sees] = torch.cat([resize(lab[:, sees], size) for lab in labs])
    return batch


def half_for(model: nn.Module, task: CrossChannelTask) -> str:
    """The half that sees ``task.sees`` and has a pretext head predicting ``task.predicts``.

    Raises:
        InputError: the model has no such half.
    """
    for name, target_name in getattr(model, 'pretext_targets', {}).items():
        if tuple(model.halves[name]) == task.sees and set(task.predicts) <= set(PRETEXT_TARGETS[target_name].channels):
            return name
    raise InputError(
        f'model: expected a half seeing Lab channels {task.sees} with a pretext head predicting {task.predicts}, '
        f'got halves {getattr(model, "halves", None)} with pretext {getattr(model, "pretext_targets", None)}')


def decode(raw: torch.Tensor, target_name: str, task: CrossChannelTask,
           temperature: float | torch.Tensor) -> torch.Tensor:
    """A pretext head's raw output (N, out_chans, h, w) -> the Lab values of ``task.predicts`` (N, P, h, w).

    ``target_name`` is the head's key in ``PRETEXT_TARGETS``; ``temperature`` (checked by the caller) may be a
    scalar tensor, which keeps it an input of an exported graph.
    """
    target = PRETEXT_TARGETS[target_name]
    raw = raw.float()
    if target.classification:
        values = annealed_mean_from_logits_unchecked(raw, BIN_CENTERS[target.channels](raw.device), temperature)
    else:
        values = raw * REGRESSION_SCALE
    return values[:, [target.channels.index(c) for c in task.predicts]]


def recombine(lab: torch.Tensor, prediction: torch.Tensor, task: CrossChannelTask,
              upsample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The result at full resolution: kept input channels, upsampled predicted ones, others 0 -> RGB/grey.

    ``upsample(prediction, guide)`` brings the prediction to full resolution; the guide is the first channel
    the half sees, at full resolution (L for colorize). Overwrites ``lab``, which is no longer needed.
    """
    lab[:, list(task.predicts)] = upsample(prediction, lab[:, task.sees[:1]])
    lab[:, [c for c in range(3) if c not in task.keeps + task.predicts]] = 0
    out = lab.new_empty(lab.shape[0], 1 if task.grey else 3, *lab.shape[2:])
    for rows in _stripes(lab.shape):
        out[:, :, rows] = lab_to_rgb_unchecked(lab[:, :, rows])[:, :out.shape[1]]
    return out


class HalfPrediction(nn.Module):
    """Steps 2 and 3 as one module: RGB -> Lab -> the half -> decoded values on the grid.

    Holds that half's layers only, so an exported file carries no weight of the other half.
    """

    def __init__(self, model: SplitBrainAlexNet, task: CrossChannelTask) -> None:
        super().__init__()
        half = half_for(model, task)
        self.task, self.target_name = task, model.pretext_targets[half]
        i = list(model.features.branches).index(half)
        self.start, self.stop = model.features.starts[i], model.features.stops[i]
        self.data_lab = model.data_lab
        self.tower = model.features.branches[half]
        self.fc = model.pre_logits.branches[half]
        self.head = model.pretext[half]

    def forward(self, rgb: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """rgb (N, 3, H, W) in [0, 1], temperature a scalar -> (N, len(task.predicts), h, w) in Lab units."""
        lab = self.data_lab(rgb)[:, self.start:self.stop]
        return decode(self.head(self.fc(self.tower(lab))), self.target_name, self.task, temperature)
