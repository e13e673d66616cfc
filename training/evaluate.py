"""The paper's evaluations on Tiny ImageNet: linear probes per layer (section 4.1.1) and colorization quality.

``linear-probe``: weights frozen; conv1..conv5 after ReLU, bilinearly resized so each layer flattens to about
9,000 values (the paper's sizes, ``PROBE_GRIDS``); one multinomial logistic regression per layer trained on
train-split features, top-1 accuracy on the val split. Features are cached under ``cache/probe_features/``
(ignored by git), keyed by the weights' sha256, split, subset size, input size and layer.

``colorization``: the metrics of Zhang et al., "Colorful Image Colorization" (ECCV 2016): AuC of the per-pixel
ab-error CDF over thresholds 0..150, its class-rebalanced variant, PSNR of the RGB result, and mean predicted vs
ground-truth chroma; for models and the baselines "grey" and "mean ab". ``--data`` is either the Tiny ImageNet
shard folder (its 64x64 val split) or a folder of photos (e.g. Kodak), measured at their full resolution
through the public ``splitbrain_hub.colorize`` (the network at its input size, ab upsampled to the photo by
each ``--upsample`` option, joined to the photo's own L, 8-bit RGB out) exactly as a user gets them.

    python training/evaluate.py linear-probe --weights gaussian --out results/probe_gaussian.json
    python training/evaluate.py linear-probe --weights splitbrain_hub/weights/X.safetensors --name release
    python training/evaluate.py colorization --weights release=splitbrain_hub/weights/X.safetensors
    python training/evaluate.py colorization --data ../shared/datasets/kodak --weights release=X.safetensors \
        --upsample bilinear guided guided:radius=2,eps=1e-2 --out results/colorization_kodak.json

A model is named by ``--weights``: a ``.safetensors`` file or a ``save_pretrained`` folder (its
``config.json`` is used when present, else the released ``splitbrain_alexnet`` recipe), or ``gaussian``:
the unsplit ``alexnet_lab`` at its random initialisation under ``--seed`` (the paper's "Gaussian" row).
"""
import argparse
import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save
from tqdm import tqdm

import splitbrain_hub  # noqa: F401  (registers the models in timm)
from splitbrain_hub import exits
from splitbrain_hub.errors import InputError
from splitbrain_hub.files import atomic_write, atomic_write_bytes
from splitbrain_hub.hub import WEIGHTS_NAME, load_pretrained, sha256_of, weights_file
from splitbrain_hub.images import IMAGE_SUFFIXES, greyscale_mask
from splitbrain_hub.inference import FEATURE_LAYERS, colorize
from splitbrain_hub.models import PRETEXT_TARGETS, REGRESSION_SCALE
from splitbrain_hub.ops.bins import (
    DEFAULT_TEMPERATURE,
    ab_bin_centers,
    annealed_mean_from_logits,
    hard_encode,
    rebalance_weights,
)
from splitbrain_hub.ops.color import lab_to_rgb, rgb_to_lab
from splitbrain_hub.ops.precision import AMP_SETTINGS, autocast, autocast_dtype, precision_name
from splitbrain_hub.ops.upsample import UPSAMPLERS, Bilinear, GuidedFilter
from training.config import DATASETS
from training.data import read_bytes, shard_samples

DATASET = DATASETS / 'tiny-imagenet'
# Feature caches live outside the work tree (never committed; kept for a later checkout on this machine).
CACHE = Path(os.environ.get('SPLITBRAIN_HUB_CACHE', '~/.cache/splitbrain_hub/cache')).expanduser()
NUM_CLASSES = 200

# Probe grid per layer at a 128x128 input (native grids 30, 14, 6, 6, 6): the paper's flattened sizes.
# conv1 96x10x10 = 9600, conv2 256x6x6 = 9216, conv3/conv4 384x5x5 = 9600, conv5 256x6x6 = 9216.
LAYERS = FEATURE_LAYERS
PROBE_GRIDS = {'conv1': 10, 'conv2': 6, 'conv3': 5, 'conv4': 5, 'conv5': 6}

# Colorization metrics (Zhang et al. 2016): ab errors are integrated over [0, AUC_MAX_THRESHOLD].
AUC_MAX_THRESHOLD = 150.0
TEMPERATURES = (1.0, DEFAULT_TEMPERATURE, 0.01)  # mean, annealed mean, (nearly) mode
# Rebalanced AuC: pixel weight = inverse prior of its ground-truth ab bin. The prior is the histogram of the
# evaluated val pixels, smoothed by rebalance_weights' Gaussian; lambda near 0 makes it a pure inverse prior.
REBALANCE_SIGMA = 5.0
REBALANCE_LAMBDA = 1e-3


# --- data -----------------------------------------------------------------------------------------

def read_split(root: Path, split: str, per_class: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` images of every class of a split (all if None), in shard order.

    Returns uint8 images (N, 3, 64, 64) and int64 labels (N,). Shards are class-balanced and shuffled, so a
    prefix is a fair subset; the order, hence the subset, is the same on every run.
    """
    shards = sorted(Path(root).glob(f'{split}-*.tar'))
    if not shards:
        raise InputError(f'dataset: expected {split}-*.tar shards in {root}, got none')
    images, labels = [], []
    taken = [0] * NUM_CLASSES
    limit = per_class if per_class is not None else math.inf
    for shard in tqdm(shards, desc=f'read {split}', unit='shard', leave=False):
        for sample in shard_samples(str(shard)):  # the trainer's reader: images and their .cls labels
            if taken[sample.label] >= limit:
                continue
            taken[sample.label] += 1
            image = Image.open(io.BytesIO(read_bytes(sample))).convert('RGB')
            images.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
            labels.append(sample.label)
        if all(t >= limit for t in taken):
            break
    return torch.stack(images), torch.tensor(labels)


def to_input(images: torch.Tensor, input_size: int) -> torch.Tensor:
    """uint8 (N, 3, h, w) -> float RGB in [0, 1] at the network's input size (bilinear, as the trainer)."""
    x = images.float() / 255
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode='bilinear', align_corners=False).clamp(0, 1)
    return x


def read_folder(root: Path) -> list[tuple[str, torch.Tensor]]:
    """Every photo directly in ``root`` (by name): (file name, uint8 RGB (3, H, W)) at its own size."""
    files = sorted(p for p in Path(root).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f'--data: expected image files ({", ".join(sorted(IMAGE_SUFFIXES))}) in {root}, got none')
    return [(p.name, torch.from_numpy(np.asarray(Image.open(p).convert('RGB')).copy()).permute(2, 0, 1))
            for p in files]


# --- models ---------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    sha256: str       # of the weights file; for an untrained model, of its state dict serialised
    source: str


def load_frozen_model(weights: str, name: str | None = None, seed: int = 0) -> LoadedModel:
    """A frozen model in eval mode from ``gaussian``, a ``.safetensors`` file or a save_pretrained folder."""
    if weights == 'gaussian':
        torch.manual_seed(seed)
        model = timm.create_model('alexnet_lab')
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        digest = hashlib.sha256(save(state)).hexdigest()
        return LoadedModel(name or f'gaussian_seed{seed}', model.eval().requires_grad_(False), digest,
                           f'alexnet_lab random init, torch.manual_seed({seed})')
    file = weights_file(weights)
    if not file.is_file():
        raise InputError(f'--weights: expected "gaussian", a .safetensors file or a folder with {WEIGHTS_NAME}, '
                         f'got {weights!r}')
    model = load_pretrained(file)  # a bare file is the released split-brain recipe, as the shipped weights
    default_name = file.parent.name if Path(weights).is_dir() else file.stem
    return LoadedModel(name or default_name, model.eval().requires_grad_(False), sha256_of(file), str(file))


# --- linear probe ---------------------------------------------------------------------------------

def probe_features(model: torch.nn.Module, images: torch.Tensor, input_size: int,
                   amp_dtype: torch.dtype | None = None, batch_size: int = 100,
                   desc: str = 'features') -> dict[str, torch.Tensor]:
    """conv1..conv5 after ReLU, bilinearly resized to ``PROBE_GRIDS`` and flattened, float16 (N, C*g*g).

    The network runs under autocast with ``amp_dtype`` (None: fp32); resizing is done in fp32.
    """
    out: dict[str, list[torch.Tensor]] = {layer: [] for layer in LAYERS}
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc=desc, unit='batch', leave=False):
            x = to_input(images[start:start + batch_size], input_size)
            with autocast(x.device, amp_dtype):
                taps = model.forward_intermediates(x, indices=list(range(len(LAYERS))), intermediates_only=True)
            for layer, tap in zip(LAYERS, taps):
                grid = PROBE_GRIDS[layer]
                resized = F.interpolate(tap.float(), size=(grid, grid), mode='bilinear', align_corners=False)
                out[layer].append(resized.flatten(1).half())
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def cached_features(loaded: LoadedModel, root: Path, split: str, per_class: int | None, input_size: int,
                    cache_dir: Path, amp_dtype: torch.dtype | None = None
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``probe_features`` of one split, read from the cache when an earlier run computed them."""
    count = 'all' if per_class is None else f'{per_class}pc'
    folder = cache_dir / 'probe_features' / loaded.sha256[:16]
    precision = '' if amp_dtype is None else f'_{precision_name(amp_dtype)}'
    paths = {layer: folder / (f'{split}_{count}_in{input_size}{precision}_{layer}_'
                              f'{PROBE_GRIDS[layer]}x{PROBE_GRIDS[layer]}.safetensors')
             for layer in LAYERS}
    if all(p.is_file() for p in paths.values()):
        loaded_layers = {layer: load_file(str(p)) for layer, p in paths.items()}
        return {k: v['features'] for k, v in loaded_layers.items()}, loaded_layers['conv1']['labels']
    images, labels = read_split(root, split, per_class)
    features = probe_features(loaded.model, images, input_size, amp_dtype, desc=f'{loaded.name} {split} features')
    folder.mkdir(parents=True, exist_ok=True)
    for layer, path in paths.items():
        tensors = {'features': features[layer], 'labels': labels}
        atomic_write_bytes(path, save(tensors))  # bytes first: safetensors words a full disk its own way
    return features, labels


@dataclass(frozen=True)
class ProbeConfig:
    """The logistic-regression recipe, the same for every layer and every row (never tuned per row)."""
    epochs: int = 10
    batch_size: int = 256
    # SGD with Nesterov momentum, cosine decay to 0, on unit-norm features. Chosen once, on the Gaussian row's
    # conv3 at 10 epochs (lr 0.1: 4.1%, 1: 5.8%, 4: 6.8% top-1), and used for every row and layer.
    lr: float = 4.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0


def train_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                num_classes: int, config: ProbeConfig = ProbeConfig(), desc: str = 'probe') -> float:
    """Multinomial logistic regression on frozen features; returns top-1 accuracy on ``val``.

    Features are standardised with the train statistics (constant features stay 0) and divided by
    sqrt(dim), so every sample has norm about 1 and one learning rate suits every layer and model.
    """
    generator = torch.Generator().manual_seed(config.seed)
    mean = train_x.float().mean(0)
    std = train_x.float().std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    scale = std * math.sqrt(train_x.shape[1])

    def standardise(x: torch.Tensor) -> torch.Tensor:
        return (x.float() - mean) / scale

    train_x = standardise(train_x)
    classifier = torch.nn.Linear(train_x.shape[1], num_classes)
    torch.nn.init.zeros_(classifier.weight)
    torch.nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                                weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * steps_per_epoch)
    for _ in tqdm(range(config.epochs), desc=desc, unit='epoch', leave=False):
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            loss = F.cross_entropy(classifier(train_x[batch]), train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(val_x), 1000):
            logits = classifier(standardise(val_x[start:start + 1000]))
            correct += (logits.argmax(1) == val_y[start:start + 1000]).sum().item()
    return correct / len(val_x)


def linear_probe(loaded: LoadedModel, root: Path = DATASET, train_per_class: int | None = 50,
                 val_per_class: int | None = None, input_size: int = 128, layers: Sequence[str] = LAYERS,
                 config: ProbeConfig = ProbeConfig(), cache_dir: Path = CACHE, amp: str = 'auto') -> list[dict]:
    """Probe accuracy per layer of one model: a list of result records (one per layer).

    ``amp`` is the feature extraction's precision (see ``splitbrain_hub.ops.precision``); the probe trains in fp32.
    """
    unknown = [layer for layer in layers if layer not in LAYERS]
    if unknown:
        raise InputError(f'layers: expected names from {LAYERS}, got {unknown}')
    amp_dtype = autocast_dtype(amp, next(loaded.model.parameters()).device)
    train_features, train_y = cached_features(loaded, root, 'train', train_per_class, input_size, cache_dir, amp_dtype)
    val_features, val_y = cached_features(loaded, root, 'val', val_per_class, input_size, cache_dir, amp_dtype)
    results = []
    for layer in layers:
        start = time.perf_counter()
        accuracy = train_probe(train_features[layer], train_y, val_features[layer], val_y, NUM_CLASSES, config,
                               desc=f'{loaded.name} {layer} probe')
        results.append(dict(
            model=loaded.name, source=loaded.source, weights_sha256=loaded.sha256, layer=layer,
            feature_shape=[train_features[layer].shape[1] // PROBE_GRIDS[layer] ** 2, PROBE_GRIDS[layer],
                           PROBE_GRIDS[layer]],
            feature_size=train_features[layer].shape[1], train_count=len(train_y), val_count=len(val_y),
            input_size=input_size, features_precision=precision_name(amp_dtype), top1=round(accuracy, 5),
            probe=config.__dict__,
            probe_seconds=round(time.perf_counter() - start, 1),
        ))
    return results


# --- colorization metrics -------------------------------------------------------------------------

def ab_error_auc(pred_ab: torch.Tensor, true_ab: torch.Tensor, weights: torch.Tensor | None = None,
                 max_threshold: float = AUC_MAX_THRESHOLD) -> float:
    """Area under the CDF of per-pixel ab errors over thresholds [0, max_threshold], normalised to [0, 1].

    The CDF of one pixel with error e is the step 1[e <= t], whose integral over [0, T] is T - min(e, T):
    so the area is exactly mean(1 - min(e, T) / T), the limit of Zhang et al.'s sweep over thresholds.
    ``weights`` (N, H, W) weigh pixels (the class-rebalanced variant).
    """
    if pred_ab.shape != true_ab.shape or pred_ab.ndim != 4 or pred_ab.shape[1] != 2:
        raise InputError(f'pred_ab, true_ab: expected two (N, 2, H, W) tensors of one shape, got '
                         f'{tuple(pred_ab.shape)} and {tuple(true_ab.shape)}')
    error = (pred_ab - true_ab).double().square().sum(1).sqrt()
    area = 1 - error.clamp(max=max_threshold) / max_threshold
    if weights is None:
        return area.mean().item()
    weights = weights.double()
    return ((area * weights).sum() / weights.sum()).item()


def psnr(pred_rgb: torch.Tensor, true_rgb: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image (N,), for RGB in [0, 1] (peak 1); identical images give +inf."""
    mse = (pred_rgb.double() - true_rgb.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


def chroma(ab: torch.Tensor) -> torch.Tensor:
    """Per-pixel chroma sqrt(a^2 + b^2), (N, H, W)."""
    return ab.double().square().sum(1).sqrt()


def ab_predictor(loaded: LoadedModel):
    """``predict(L (N, 1, S, S)) -> {temperature or None: ab on the head grid}`` for a model's ab head."""
    model = loaded.model
    heads = {half: target for half, target in model.pretext_targets.items() if target in ('ab_cl', 'ab_reg')}
    if not heads:
        raise InputError(f'{loaded.name}: expected a pretext head predicting ab (ab_cl or ab_reg), '
                         f'got {model.pretext_targets}')
    half, target = next(iter(heads.items()))
    channels = PRETEXT_TARGETS[target].channels

    def predict(lightness: torch.Tensor) -> dict[float | None, torch.Tensor]:
        # ab = 0 is what the trainer shows a network for hidden ab channels; the split-brain l_half never sees them.
        lab = torch.cat([lightness, torch.zeros_like(lightness).expand(-1, 2, -1, -1)], dim=1)
        # Only this half's fc tower runs: fc6/fc7 are most of the network's cost.
        output = model.forward_pretext(lab, is_lab=True, halves=[half])[half]
        if target == 'ab_cl':
            centers = ab_bin_centers(dtype=output.dtype)
            return {t: annealed_mean_from_logits(output, centers, t) for t in TEMPERATURES}
        return {None: output[:, [channels.index(1), channels.index(2)]] * REGRESSION_SCALE}
    return predict


class ColorizationMetrics:
    """Accumulates AuC, rebalanced AuC, PSNR and chroma of one predictor over batches."""

    def __init__(self) -> None:
        self.sums = dict(area=0.0, weighted_area=0.0, weight=0.0, pixels=0, psnr=0.0, images=0, chroma_pred=0.0,
                         chroma_true=0.0)

    def update(self, pred_ab: torch.Tensor, lab: torch.Tensor, rgb: torch.Tensor, weights: torch.Tensor) -> None:
        """One batch: predicted ab, ground-truth Lab and RGB, and the rebalancing weight of each pixel."""
        pred_rgb = lab_to_rgb(torch.cat([lab[:, :1], pred_ab], dim=1), clip=True)
        self._add(pred_ab, pred_rgb, lab, rgb, weights)

    def update_rgb(self, pred_rgb: torch.Tensor, lab: torch.Tensor, rgb: torch.Tensor, weights: torch.Tensor) -> None:
        """One batch whose prediction is an RGB image: its ab are what the viewer sees (after gamut clipping)."""
        self._add(rgb_to_lab(pred_rgb)[:, 1:], pred_rgb, lab, rgb, weights)

    def _add(self, pred_ab: torch.Tensor, pred_rgb: torch.Tensor, lab: torch.Tensor, rgb: torch.Tensor,
             weights: torch.Tensor) -> None:
        true_ab = lab[:, 1:]
        weights = weights.double()
        pixels = true_ab.shape[0] * true_ab.shape[2] * true_ab.shape[3]
        s = self.sums
        s['area'] += ab_error_auc(pred_ab, true_ab) * pixels
        s['weighted_area'] += ab_error_auc(pred_ab, true_ab, weights) * weights.sum().item()
        s['weight'] += weights.sum().item()
        s['pixels'] += pixels
        s['psnr'] += psnr(pred_rgb, rgb).clamp(max=100).sum().item()
        s['images'] += len(rgb)
        s['chroma_pred'] += chroma(pred_ab).sum().item()
        s['chroma_true'] += chroma(true_ab).sum().item()

    def result(self) -> dict[str, float]:
        s = self.sums
        return dict(auc=round(s['area'] / s['pixels'], 5), auc_rebalanced=round(s['weighted_area'] / s['weight'], 5),
                    psnr_db=round(s['psnr'] / s['images'], 3), chroma_pred=round(s['chroma_pred'] / s['pixels'], 3),
                    chroma_true=round(s['chroma_true'] / s['pixels'], 3))


def train_mean_ab(root: Path, train_per_class: int | None) -> torch.Tensor:
    """Mean (a, b) over the pixels of the colour photos of the train split: the "mean ab" baseline, float64 (2,)."""
    train_images, _ = read_split(root, 'train', train_per_class)
    train_images = train_images[~greyscale_mask(train_images)]
    mean_ab = torch.zeros(2, dtype=torch.float64)
    for start in range(0, len(train_images), 1000):
        mean_ab += rgb_to_lab(train_images[start:start + 1000].double() / 255)[:, 1:].sum((0, 2, 3))
    return mean_ab / (train_images.shape[0] * train_images.shape[2] * train_images.shape[3])


def rebalancing(bins: torch.Tensor) -> torch.Tensor:
    """Weight per ab bin: the inverse of the evaluated pixels' own smoothed prior (``bins``: their true bins)."""
    centers = ab_bin_centers(dtype=torch.float64)
    histogram = torch.bincount(bins.flatten(), minlength=len(centers)).double()
    return rebalance_weights(histogram, centers, REBALANCE_SIGMA, REBALANCE_LAMBDA)


def colorization(models: Sequence[LoadedModel], root: Path = DATASET, val_per_class: int | None = None,
                 train_per_class: int | None = 50, input_size: int = 128, batch_size: int = 100) -> list[dict]:
    """Colorization metrics on the colour val photos for each model (all its temperatures) and both baselines."""
    images, _ = read_split(root, 'val', val_per_class)
    keep = ~greyscale_mask(images)
    images = images[keep]
    mean_ab = train_mean_ab(root, train_per_class)
    centers = ab_bin_centers(dtype=torch.float64)
    bins = torch.cat([hard_encode(rgb_to_lab(images[start:start + 1000].float() / 255)[:, 1:], centers.float())
                      for start in range(0, len(images), 1000)])
    bin_weights = rebalancing(bins)

    metrics: dict[tuple[str, float | None], ColorizationMetrics] = {}
    predictors = {m.name: ab_predictor(m) for m in models}
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc='colorization', unit='batch'):
            rgb = images[start:start + batch_size].float() / 255
            lab = rgb_to_lab(rgb)
            predictions = {('grey', None): torch.zeros_like(lab[:, 1:]),
                           ('mean_ab_train', None): mean_ab.float().view(1, 2, 1, 1).expand_as(lab[:, 1:])}
            lightness = rgb_to_lab(to_input(images[start:start + batch_size], input_size))[:, :1]
            for name, predict in predictors.items():
                for temperature, ab in predict(lightness).items():
                    predictions[name, temperature] = F.interpolate(ab, size=lab.shape[-2:], mode='bilinear',
                                                                   align_corners=False)
            weights = bin_weights[bins[start:start + batch_size]]
            for key, pred_ab in predictions.items():
                metrics.setdefault(key, ColorizationMetrics()).update(pred_ab, lab, rgb, weights)
    shas = {m.name: m.sha256 for m in models}
    return [dict(model=name, weights_sha256=shas.get(name), temperature=temperature, val_images=len(images),
                 greyscale_val_images_excluded=int((~keep).sum()), input_size=input_size,
                 mean_ab_train=[round(v, 3) for v in mean_ab.tolist()], **m.result())
            for (name, temperature), m in metrics.items()]


def parse_upsample(spec: str) -> tuple[str, object]:
    """``bilinear``, ``guided`` or ``guided:radius=R,eps=E`` -> (a label for the tables, the upsampler)."""
    name, _, params = spec.partition(':')
    if name not in UPSAMPLERS or (params and name != 'guided'):
        raise InputError(f'--upsample: expected one of {tuple(UPSAMPLERS)} or guided:radius=R,eps=E, got {spec!r}')
    if name == 'bilinear':
        return 'bilinear', Bilinear()
    kwargs = {}
    for item in filter(None, params.split(',')):
        key, _, value = item.partition('=')
        if key not in ('radius', 'eps') or not value:
            raise InputError(f'--upsample: expected radius=R and/or eps=E after "guided:", got {item!r}')
        try:
            kwargs[key] = int(value) if key == 'radius' else float(value)
        except ValueError:
            raise InputError(f'--upsample: expected a number for {key}, got {value!r}') from None
    upsampler = GuidedFilter(**kwargs)
    return f'guided r={upsampler.radius} eps={upsampler.eps:g}', upsampler


def _temperatures(loaded: LoadedModel) -> tuple[float | None, ...]:
    """The annealed-mean temperatures a model is measured at: all of ``TEMPERATURES`` for a classification
    head, None (not used) for a regression head."""
    targets = loaded.model.pretext_targets.values()
    return TEMPERATURES if 'ab_cl' in targets else (None,)


def _as_8bit(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] rounded to 8 bits and back, as colorize hands back a photo's result."""
    return (rgb * 255).round().clamp(0, 255) / 255


def full_resolution_colorization(models: Sequence[LoadedModel], folder: Path, upsamplers: Sequence[str],
                                 train_root: Path = DATASET, train_per_class: int | None = 50,
                                 input_size: int | None = None, amp: str = 'auto') -> list[dict]:
    """Colorization metrics on the colour photos of ``folder`` at their own resolution.

    Each model row is ``splitbrain_hub.colorize`` at ``temperature`` with each upsampler (``parse_upsample``
    specs), uint8 in and uint8 out; the baselines are the photo's L with ab = 0 (grey) or with the train set's
    mean ab, also rounded to 8-bit RGB. Every row's ab are read back from its RGB result.
    """
    photos = read_folder(folder)
    colour = [not greyscale_mask(image[None]) for _, image in photos]
    photos = [photo for photo, keep in zip(photos, colour) if keep]
    images = [image for _, image in photos]
    labs = [rgb_to_lab(image[None].float() / 255) for image in images]
    centers = ab_bin_centers(dtype=torch.float32)
    bins = [hard_encode(lab[:, 1:], centers) for lab in labs]
    bin_weights = rebalancing(torch.cat([b.flatten() for b in bins]))
    mean_ab = train_mean_ab(train_root, train_per_class)
    parsed = [parse_upsample(spec) for spec in upsamplers]

    metrics: dict[tuple[str, float | None, str | None], ColorizationMetrics] = {}

    def measure(key, predictions: Sequence[torch.Tensor]) -> None:
        m = metrics.setdefault(key, ColorizationMetrics())
        for pred_rgb, image, lab, image_bins in zip(predictions, images, labs, bins):
            m.update_rgb(pred_rgb, lab, image[None].float() / 255, bin_weights[image_bins])

    with torch.inference_mode():
        for name, ab in (('grey', torch.zeros(2)), ('mean_ab_train', mean_ab.float())):
            measure((name, None, None), [_as_8bit(lab_to_rgb(torch.cat([lab[:, :1], ab.view(1, 2, 1, 1).expand_as(
                lab[:, 1:])], dim=1), clip=True)) for lab in labs])
    jobs = [(m, t, label, u) for m in models for t in _temperatures(m) for label, u in parsed]
    for loaded, temperature, label, upsampler in tqdm(jobs, desc='colorization', unit='row'):
        outputs = colorize(images, model=loaded.model, size=input_size, amp=amp, upsample=upsampler,
                           temperature=DEFAULT_TEMPERATURE if temperature is None else temperature)
        measure((loaded.name, temperature, label), [out[None].float() / 255 for out in outputs])

    shas = {m.name: m.sha256 for m in models}
    device = next(models[0].model.parameters()).device if models else torch.device('cpu')
    network = models[0].model.pretrained_cfg['input_size'][-1] if models and input_size is None else input_size
    sizes = sorted({f'{image.shape[2]}x{image.shape[1]}' for image in images})
    return [dict(model=name, weights_sha256=shas.get(name), temperature=temperature, upsample=upsample,
                 data=Path(folder).name, images=len(images), greyscale_images_excluded=colour.count(False),
                 resolution=sizes, input_size=network, network_precision=precision_name(autocast_dtype(amp, device)),
                 mean_ab_train=[round(v, 3) for v in mean_ab.tolist()], **m.result())
            for (name, temperature, upsample), m in metrics.items()]


def full_resolution_markdown(results: Sequence[dict]) -> str:
    """The full-resolution results as a Markdown table, one line per model, temperature and upsampler."""
    first = results[0]
    lines = [
        f"# Colorization quality at full resolution: {first['data']}",
        '',
        f"{first['images']} colour photos ({first['greyscale_images_excluded']} greyscale left out), "
        f"{', '.join(first['resolution'])} (width x height), each measured at its own resolution through "
        f"`splitbrain_hub.colorize`: the network sees L with its short side at {first['input_size']} px, aspect kept "
        f"({first['network_precision']}), its ab grid is upsampled to the photo (bilinear, or the guided filter "
        'with the full-resolution L as guide: radius in ab-grid cells, eps in (L/100)²) and joined to the '
        "photo's own L; the result is 8-bit RGB, and its ab are read back from it. Baselines: the photo's L with "
        f"ab = 0 (grey) or the Tiny ImageNet train set's mean ab {first['mean_ab_train']}, also as 8-bit RGB. "
        'AuC: area under the CDF of per-pixel ab error over 0–150 (1 = perfect); rebalanced: pixels weighted '
        'by the inverse prior of their true ab bin (prior from these photos, grid 10). PSNR of the RGB result '
        '(mean over photos); chroma = mean sqrt(a² + b²) over pixels.',
        '',
        '| Model | T | upsampling | AuC | AuC rebalanced | PSNR (dB) | chroma predicted | chroma true |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for r in results:
        t = '–' if r['temperature'] is None else f"{r['temperature']:g}"
        lines.append(f"| {r['model']} | {t} | {r['upsample'] or '–'} | {r['auc']:.4f} | {r['auc_rebalanced']:.4f} | "
                     f"{r['psnr_db']:.2f} | {r['chroma_pred']:.2f} | {r['chroma_true']:.2f} |")
    return '\n'.join(lines) + '\n'


def colorization_markdown(results: Sequence[dict]) -> str:
    """The colorization results as a Markdown table, one line per model and temperature."""
    first = results[0]
    lines = [
        '# Colorization quality on Tiny ImageNet val',
        '',
        f"{first['val_images']} colour val photos ({first['greyscale_val_images_excluded']} greyscale ones left out), "
        f"64×64; the network sees L at {first['input_size']}×{first['input_size']}, its ab (on the conv5 grid) is "
        'upsampled bilinearly to 64×64 and joined to the true L. AuC: area under the CDF of per-pixel ab error '
        'over 0–150 (1 = perfect); rebalanced: pixels weighted by the inverse prior of their true ab bin (prior '
        'from these val pixels). PSNR of the RGB result; chroma = mean sqrt(a² + b²). '
        f"Mean ab of the train set: {first['mean_ab_train']}.",
        '',
        '| Model | T | AuC | AuC rebalanced | PSNR (dB) | chroma predicted | chroma true |',
        '|---|---|---|---|---|---|---|',
    ]
    for r in results:
        t = '–' if r['temperature'] is None else f"{r['temperature']:g}"
        lines.append(f"| {r['model']} | {t} | {r['auc']:.4f} | {r['auc_rebalanced']:.4f} | {r['psnr_db']:.2f} | "
                     f"{r['chroma_pred']:.2f} | {r['chroma_true']:.2f} |")
    return '\n'.join(lines) + '\n'


# --- command line ---------------------------------------------------------------------------------

def _per_class(value: str) -> int | None:
    if value == 'all':
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer or "all", got {value!r}')
    return int(value)


def _named(spec: str) -> tuple[str | None, str]:
    """``name=path`` or ``path``."""
    name, sep, path = spec.partition('=')
    return (name, path) if sep else (None, spec)


def write_json(data, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1) + '\n'))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--weights', action='append', required=True,
                        help='[name=]path of a .safetensors file or save_pretrained folder, or "gaussian"; repeatable')
    common.add_argument('--seed', type=int, default=0, help='init seed of the "gaussian" model (default 0)')
    common.add_argument('--data', type=Path, default=DATASET,
                        help='the tiny-imagenet shard folder; for colorization also a folder of photos (full resolution)')
    common.add_argument('--input-size', type=int,
                        help="network input size (default 128 for the shards' 64x64 photos; a photo folder: the model's)")
    common.add_argument('--train-per-class', type=_per_class, default=50,
                        help='train images per class (default 50 = 10,000 images; "all" = 160 per class)')
    common.add_argument('--val-per-class', type=_per_class, default=None,
                        help='val images per class (probe default: all 50; colorization default: 10)')
    common.add_argument('--out', type=Path, help='write the results (JSON) here')
    probe = commands.add_parser('linear-probe', parents=[common], help='linear probes on conv1..conv5')
    probe.add_argument('--layers', nargs='+', default=list(LAYERS), choices=LAYERS)
    probe.add_argument('--epochs', type=int, default=ProbeConfig.epochs)
    probe.add_argument('--probe-seed', type=int, default=ProbeConfig.seed)
    probe.add_argument('--amp', choices=AMP_SETTINGS, default='auto',
                       help='precision of the feature extraction: auto = bf16 where the CPU/GPU has it natively')
    probe.add_argument('--cache', type=Path, default=CACHE, help=f'feature cache folder (default {CACHE})')
    colour = commands.add_parser('colorization', parents=[common],
                                 help='AuC, rebalanced AuC, PSNR, chroma on the val shards or a photo folder')
    colour.set_defaults(val_per_class=10)  # 2,000 val photos: the fc layers make this the slow evaluation
    colour.add_argument('--upsample', nargs='+', default=['bilinear', 'guided'], metavar='SPEC',
                        help='photo folder only: how ab reach full resolution, each measured: bilinear, guided '
                             '(the default filter) or guided:radius=R,eps=E (default: bilinear guided)')
    colour.add_argument('--train-data', type=Path, default=DATASET,
                        help='photo folder only: the shard folder whose train split gives the "mean ab" baseline')
    colour.add_argument('--amp', choices=AMP_SETTINGS, default='auto',
                        help="photo folder only: the network's precision in colorize (default auto, colorize's own)")
    args = parser.parse_args(argv)
    folder = args.command == 'colorization' and not any(Path(args.data).glob('val-*.tar'))
    input_size = args.input_size or (None if folder else 128)

    models = [load_frozen_model(path, name, args.seed) for name, path in map(_named, args.weights)]
    start = time.perf_counter()
    if args.command == 'linear-probe':
        config = ProbeConfig(epochs=args.epochs, seed=args.probe_seed)
        results = [r for m in models for r in linear_probe(
            m, args.data, args.train_per_class, args.val_per_class, input_size, args.layers, config, args.cache,
            args.amp)]
        for r in results:
            print(f"{r['model']:>24} {r['layer']}  {r['feature_size']:>5}  top-1 {100 * r['top1']:.2f}%")
    else:
        if folder:
            results = full_resolution_colorization(models, args.data, args.upsample, args.train_data,
                                                   args.train_per_class, input_size, args.amp)
        else:
            results = colorization(models, args.data, args.val_per_class, args.train_per_class, input_size)
        for r in results:
            t = '-' if r['temperature'] is None else r['temperature']
            upsample = f"  {r['upsample'] or '-':<24}" if folder else ''
            print(f"{r['model']:>24} T={t:<5}{upsample} AuC {r['auc']:.4f}  rebal {r['auc_rebalanced']:.4f}  "
                  f"PSNR {r['psnr_db']:.2f} dB  chroma {r['chroma_pred']:.2f} / {r['chroma_true']:.2f}")
    print(f'wall time {time.perf_counter() - start:.0f} s', file=sys.stderr)
    if args.out:
        write_json(results, args.out)
        if args.command == 'colorization':
            markdown = full_resolution_markdown if folder else colorization_markdown
            atomic_write_bytes(args.out.with_suffix('.md'), markdown(results).encode())
    return 0


if __name__ == '__main__':
    sys.exit(exits.run(main))
