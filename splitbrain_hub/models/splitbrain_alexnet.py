"""Split-Brain Autoencoder AlexNet

Paper: `Split-Brain Autoencoders: Unsupervised Learning by Cross-Channel Prediction`
    - Richard Zhang, Phillip Isola, Alexei A. Efros, CVPR 2017 (https://arxiv.org/abs/1611.09842)

The network is AlexNet cut in two along the channel axis. Each half is an ordinary dense AlexNet
tower of half the width that sees only its own Lab channels: the ``l_half`` sees L and predicts ab
(colorization), the ``ab_half`` sees a, b and predicts L (grayscale prediction). Their layer outputs
concatenated are the representation (conv1..conv5 = 96, 256, 384, 384, 256 channels).

Geometry follows the authors' released ``deploy_lab.prototxt`` so their weights can be imported:
conv1 11x11 stride 4 without padding, fully convolutional fc6 (6x6, dilation 2, padding 5) and fc7
(1x1). ``pool5`` keeps the conv5 grid (3x3, stride 1, padding 1) so the pretext predictions are dense
on it (13x13 for a 227x227 input); ``pool5_stride=2`` gives the release's own pooling.

The model takes ordinary RGB in [0, 1] (or greyscale with ``in_chans=1``) and converts it to Lab
inside, then applies the release's ``data_lab`` layer: a fixed per-channel scale and shift (a 1x1
convolution with group 3, kept as buffers). So timm's data config and transforms give correct input.

Heads:
  * timm's classification head (``forward_head``): fc6, fc7 per half (the pre-logits, 4096 wide),
    global pool, linear classifier; ``num_classes=0`` leaves the pooled fc7 features.
  * the pretext heads (``forward_pretext``): per half, a 1x1 convolution on its fc7 predicting its
    target on the conv5 grid. They exist only when ``pretext`` names targets; the registered factory
    adds the paper's pair when ``num_classes == 0`` (the self-supervised network), so a model built
    for fine-tuning a classifier has no parameter outside its classification path.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ClassifierHead
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..errors import InputError, WeightsError
from ..hub.builder import build_model_with_weights
from ..ops.bins import L_BIN_COUNT, ab_bin_count
from ..ops.color import PIXELS_PER_PASS, rgb_to_lab_unchecked
from ..ops.tracing import in_traced_graph

__all__ = ['ALEXNET_LAYERS', 'ConvLayer', 'FcLayer', 'PRETEXT_TARGETS', 'PretextTarget', 'REGRESSION_SCALE',
           'SPLIT_BRAIN_HALVES', 'SPLIT_BRAIN_PRETEXT', 'SplitBrainAlexNet', 'checkpoint_filter_fn']


# --- architecture as data -------------------------------------------------------------------------

class ConvLayer(NamedTuple):
    """A feature layer at full width (a network of n halves gives each half ``out_chs // n`` channels)."""
    name: str
    out_chs: int
    kernel: int
    stride: int
    padding: int
    pool: str | None  # the 3x3 max pool after it ('pool5' keeps the grid when pool5_stride == 1), or None


class FcLayer(NamedTuple):
    """A fully convolutional fc layer at full width; it keeps the grid."""
    name: str
    out_chs: int
    kernel: int
    dilation: int
    padding: int


# AlexNet's layer table, JSON-friendly as ``config()`` records it (timm's VGG takes its ``cfg`` the same way):
# 'convs' rows are ConvLayer fields, 'fcs' rows FcLayer fields. A narrower test network is another table.
ALEXNET_LAYERS: dict[str, list[list]] = {
    'convs': [
        ['conv1', 96, 11, 4, 0, 'pool1'],
        ['conv2', 256, 5, 1, 2, 'pool2'],
        ['conv3', 384, 3, 1, 1, None],
        ['conv4', 384, 3, 1, 1, None],
        ['conv5', 256, 3, 1, 1, 'pool5'],
    ],
    'fcs': [
        ['fc6', 4096, 6, 2, 5],
        ['fc7', 4096, 1, 1, 0],
    ],
}

# The paper's split: Lab channel indices each half sees.
SPLIT_BRAIN_HALVES: dict[str, list[int]] = {'l_half': [0], 'ab_half': [1, 2]}
# The paper's (cl, cl) objective: what each half predicts.
SPLIT_BRAIN_PRETEXT: dict[str, str] = {'l_half': 'ab_cl', 'ab_half': 'l_cl'}
# The release's data_lab layer as we train it: L in [0, 100] -> [-1, 1], ab / 110 -> about [-1, 1].
DEFAULT_LAB_SCALE = (1 / 50, 1 / 110, 1 / 110)
DEFAULT_LAB_SHIFT = (-1.0, 0.0, 0.0)


@dataclass(frozen=True)
class PretextTarget:
    """What a pretext head predicts: some Lab channels, as a distribution over bins or as values.

    Regression heads predict the channels divided by ``REGRESSION_SCALE`` (Lab units / 100).
    """
    channels: tuple[int, ...]
    classification: bool

    @property
    def out_chans(self) -> int:
        if not self.classification:
            return len(self.channels)
        return ab_bin_count() if self.channels == (1, 2) else L_BIN_COUNT


REGRESSION_SCALE = 100.0
PRETEXT_TARGETS: dict[str, PretextTarget] = {
    'ab_cl': PretextTarget((1, 2), classification=True),
    'ab_reg': PretextTarget((1, 2), classification=False),
    'l_cl': PretextTarget((0,), classification=True),
    'l_reg': PretextTarget((0,), classification=False),
    'lab_reg': PretextTarget((0, 1, 2), classification=False),
}


# --- modules --------------------------------------------------------------------------------------


class DataLab(nn.Module):
    """RGB (or grey) in [0, 1] -> Lab -> per-channel ``scale * lab + shift``: the release's ``data_lab``.

    ``weight`` (3, 1, 1, 1) and ``bias`` (3,) are buffers in the layout of Caffe's group-3 1x1
    convolution, so imported weights drop in and no parameter is left without a gradient.
    """

    def __init__(self, in_chans: int = 3, device=None, dtype=None) -> None:
        super().__init__()
        if in_chans not in (1, 3):
            raise InputError(f'in_chans: expected 1 (greyscale) or 3 (RGB), got {in_chans}')
        self.in_chans = in_chans
        dd = {'device': device, 'dtype': dtype}
        self.register_buffer('weight', torch.tensor(DEFAULT_LAB_SCALE, **dd).reshape(3, 1, 1, 1))
        self.register_buffer('bias', torch.tensor(DEFAULT_LAB_SHIFT, **dd))

    def lab(self, x: torch.Tensor) -> torch.Tensor:
        """Raw Lab (L in [0, 100]) of an RGB or greyscale batch; greyscale gets a = b = 0 exactly."""
        rgb = x.expand(-1, 3, -1, -1) if self.in_chans == 1 else x
        lab = rgb_to_lab_unchecked(rgb) if torch.jit.is_scripting() else self._rgb_to_lab_in_chunks(rgb)
        if self.in_chans == 1:
            lab = torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], dim=1)
        return lab

    @torch.jit.unused
    def _rgb_to_lab_in_chunks(self, rgb: torch.Tensor) -> torch.Tensor:
        """A few images at a time (``PIXELS_PER_PASS``): the conversion's elementwise passes then stay in the
        CPU cache. Each image's numbers are the same either way, so a traced graph takes the one pass (see
        ``in_traced_graph``)."""
        if in_traced_graph(rgb):
            return rgb_to_lab_unchecked(rgb)
        chunk = max(1, PIXELS_PER_PASS // (rgb.shape[-2] * rgb.shape[-1]))
        return torch.cat([rgb_to_lab_unchecked(images) for images in rgb.split(chunk)])

    def normalize(self, lab: torch.Tensor) -> torch.Tensor:
        # channels_last: the towers' convolutions run markedly faster in it on CPU (and on GPU in bf16).
        lab = lab * self.weight.reshape(1, 3, 1, 1) + self.bias.reshape(1, 3, 1, 1)
        return lab.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.lab(x))


class Halves(nn.Module):
    """One branch per half, each on its own slice [start, stop) of the input channels; outputs concatenated.

    The slices are how a half sees only its own inputs: its Lab channels for the feature towers, its
    own part of pool5 for the fc towers.
    """

    def __init__(self, branches: dict[str, nn.Module], slices: list[tuple[int, int]]) -> None:
        super().__init__()
        self.branches = nn.ModuleDict(branches)
        self.starts = [start for start, _ in slices]
        self.stops = [stop for _, stop in slices]

    def forward_each(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        for i, branch in enumerate(self.branches.values()):
            outputs.append(branch(x[:, self.starts[i]:self.stops[i]]))
        return outputs

    def forward_one(self, name: str, x: torch.Tensor) -> torch.Tensor:
        i = list(self.branches.keys()).index(name)
        return self.branches[name](x[:, self.starts[i]:self.stops[i]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.forward_each(x), dim=1)


def _device_dtype(module: nn.Module) -> dict[str, Any]:
    parameter = next(module.parameters())
    return {'device': parameter.device, 'dtype': parameter.dtype}


def _contiguous_slice(name: str, channels: list[int]) -> tuple[int, int]:
    if not channels or list(channels) != list(range(channels[0], channels[0] + len(channels))):
        raise InputError(f'halves[{name!r}]: expected a non-empty run of consecutive Lab channels, got {channels}')
    if channels[0] < 0 or channels[-1] > 2:
        raise InputError(f'halves[{name!r}]: expected Lab channel indices in 0..2, got {channels}')
    return channels[0], channels[-1] + 1


def parse_layers(layers: dict[str, list[list]]) -> tuple[list[ConvLayer], list[FcLayer]]:
    """A layer table (``ALEXNET_LAYERS``'s form, tuples or lists) -> its typed rows."""
    try:
        convs = [ConvLayer(*row) for row in layers['convs']]
        fcs = [FcLayer(*row) for row in layers['fcs']]
    except (KeyError, TypeError) as e:
        raise InputError(f'layers: expected {{"convs": [[name, out_chs, kernel, stride, padding, pool], ...], '
                         f'"fcs": [[name, out_chs, kernel, dilation, padding], ...]}}, got {layers!r} ({e})') from e
    if not convs or not fcs:
        raise InputError(f'layers: expected at least one conv and one fc layer, got {len(convs)} and {len(fcs)}')
    return convs, fcs


def _reductions(convs: list[ConvLayer]) -> list[int]:
    """Stride of each conv output w.r.t. the input: the conv strides and the stride-2 pools before it."""
    reductions, stride = [], 1
    for conv in convs:
        stride *= conv.stride
        reductions.append(stride)
        if conv.pool is not None and conv.pool != 'pool5':  # pool5 is the last tap's own pool
            stride *= 2
    return reductions


def _feature_tower(convs: list[ConvLayer], in_chs: int, divisor: int, pool5_stride: int,
                   dd: dict[str, Any]) -> nn.Sequential:
    """conv1..pool5 of one half: AlexNet at 1/divisor of the width, on ``in_chs`` Lab channels."""
    layers: list[tuple[str, nn.Module]] = []
    for name, out_chs, kernel, stride, padding, pool in convs:
        out_chs //= divisor
        layers.append((name, nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=padding, **dd)))
        layers.append(('relu' + name[-1], nn.ReLU(inplace=True)))
        if pool == 'pool5':
            layers.append((pool, nn.MaxPool2d(3, stride=pool5_stride, padding=1 if pool5_stride == 1 else 0)))
        elif pool is not None:
            layers.append((pool, nn.MaxPool2d(3, stride=2)))
        in_chs = out_chs
    return nn.Sequential(OrderedDict(layers))


class GemmConv2d(nn.Conv2d):
    """A zero-padded ``nn.Conv2d`` computed as im2col (``F.unfold``) and one matrix product: the same
    parameters, state-dict keys and function, with a channels_last result.

    Why: fc6 is a 6x6 convolution with dilation 2 on the small conv5 grid, most of the network's work. On
    CPUs oneDNN's dilated convolution does not use the bf16 matrix units; as one GEMM, fc6's forward +
    backward in bf16 runs about twice as fast, and fp32 about as fast (figures: MODEL_CARD.md, "Training speed
    and precision"). The pretext heads are 1x1 instances: oneDNN's bf16 weight gradient of a 1x1 convolution from
    4096 channels to 1-8 (the regression heads) has corrupted the heap on CPUs with AVX-512 BF16 (see
    ``tests/test_models.py::test_regression_head_bf16_backward``); as a GEMM it is correct.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel: int, dilation: int = 1, padding: int = 0,
                 stride: int = 1, **dd: Any) -> None:
        super().__init__(in_chs, out_chs, kernel, stride=stride, padding=padding, dilation=dilation, **dd)
        self.geometry: tuple[int, int, int, int] = (kernel, dilation, padding, stride)  # ints, for TorchScript

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, dilation, padding, stride = self.geometry
        batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
        out_h = (height + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        out_w = (width + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        if kernel == 1 and padding == 0 and stride == 1:
            rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])                         # (N*h*w, C)
        else:
            columns = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (N, C*k*k, h*w)
            # One 2-D product over all positions of all images: a 3-D, transposed input would make matmul
            # expand the weight once per image (a 600 MB copy in bf16 at batch 32).
            rows = columns.transpose(1, 2).reshape(-1, columns.shape[1])                  # (N*h*w, C*k*k)
        out = F.linear(rows, self.weight.flatten(1), self.bias)                           # (N*h*w, out_chs)
        return out.reshape(batch, out_h, out_w, -1).permute(0, 3, 1, 2)                  # NCHW, channels_last


def _fc_tower(fcs: list[FcLayer], in_chs: int, divisor: int, drop_rate: float, dd: dict[str, Any]) -> nn.Sequential:
    """fc6, fc7 of one half, on its own part of pool5 (``in_chs`` channels)."""
    layers: list[tuple[str, nn.Module]] = []
    for name, out_chs, kernel, dilation, padding in fcs:
        out_chs //= divisor
        conv = GemmConv2d if kernel > 1 else nn.Conv2d  # a 1x1 convolution is one GEMM already
        layers.append((name, conv(in_chs, out_chs, kernel, dilation=dilation, padding=padding, **dd)))
        layers.append(('relu' + name[-1], nn.ReLU(inplace=True)))
        layers.append(('drop' + name[-1], nn.Dropout(drop_rate)))
        in_chs = out_chs
    return nn.Sequential(OrderedDict(layers))


class SplitBrainAlexNet(nn.Module):
    """AlexNet of one or more disjoint halves over Lab channels (the paper's split-brain autoencoder).

    Args:
        halves: half name -> the consecutive Lab channels it sees. The default is the paper's split
            ``{'l_half': [0], 'ab_half': [1, 2]}``; ``{'lab': [0, 1, 2]}`` is an unsplit AlexNet.
        pretext: half name -> target in ``PRETEXT_TARGETS`` its pretext head predicts; ``None`` or
            ``{}`` builds no pretext head.
        num_classes: classes of the linear classifier on pooled fc7 (0: none, output the features).
        in_chans: 3 for RGB input, 1 for greyscale (the halves that see a, b then see zeros).
        global_pool: timm pool type before the classifier.
        drop_rate: dropout after fc6 and fc7 and before the classifier.
        pool5_stride: 1 keeps the conv5 grid (dense predictions); 2 is the Caffe release's pool5.
        layers: the layer table, ``ALEXNET_LAYERS`` by default (see there); widths are full-network widths.
    """

    def __init__(
            self,
            halves: dict[str, list[int]] | None = None,
            pretext: dict[str, str] | None = None,
            num_classes: int = 0,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            pool5_stride: int = 1,
            layers: dict[str, list[list]] | None = None,
            device=None,
            dtype=None,
    ) -> None:
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        halves = dict(SPLIT_BRAIN_HALVES if halves is None else halves)
        pretext = dict(pretext or {})
        if not halves:
            raise InputError('halves: expected at least one half, got none')
        if pool5_stride not in (1, 2):
            raise InputError(f'pool5_stride: expected 1 or 2, got {pool5_stride}')
        unknown = {name: target for name, target in pretext.items()
                   if name not in halves or target not in PRETEXT_TARGETS}
        if unknown:
            raise InputError(
                f'pretext: expected half names from {sorted(halves)} mapped to targets from '
                f'{sorted(PRETEXT_TARGETS)}, got {unknown}')
        convs, fcs = parse_layers(ALEXNET_LAYERS if layers is None else layers)
        divisor = len(halves)
        if any(layer.out_chs % divisor for layer in convs + fcs):
            raise InputError(f'halves: expected layer widths that split into {divisor} equal halves, got '
                             f'{[layer.out_chs for layer in convs + fcs]}')

        self.halves = {name: list(channels) for name, channels in halves.items()}
        self.pretext_targets = pretext
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.pool5_stride = pool5_stride
        self.convs, self.fcs = convs, fcs

        self.data_lab = DataLab(in_chans, **dd)
        lab_slices = [_contiguous_slice(name, channels) for name, channels in halves.items()]
        self.features = Halves(
            {name: _feature_tower(convs, stop - start, divisor, pool5_stride, dd)
             for name, (start, stop) in zip(halves, lab_slices)},
            lab_slices)
        pool5_width = convs[-1].out_chs // divisor
        self.pre_logits = Halves(
            {name: _fc_tower(fcs, pool5_width, divisor, drop_rate, dd) for name in halves},
            [(i * pool5_width, (i + 1) * pool5_width) for i in range(divisor)])
        self.pretext = nn.ModuleDict({
            name: GemmConv2d(fcs[-1].out_chs // divisor, PRETEXT_TARGETS[target].out_chans, 1, **dd)
            for name, target in pretext.items()
        })
        self.num_features = convs[-1].out_chs
        self.head_hidden_size = fcs[-1].out_chs
        self.head = ClassifierHead(self.head_hidden_size, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        # Taps are the conv outputs after ReLU, as the paper's linear probes read them.
        layer_names = list(next(iter(self.features.branches.values()))._modules)
        self.feature_ends = [layer_names.index('relu' + conv.name[-1]) for conv in convs]
        self.feature_info = [
            dict(num_chs=conv.out_chs, reduction=reduction, module=conv.name)
            for conv, reduction in zip(convs, _reductions(convs))
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_in', nonlinearity='relu')
                nn.init.zeros_(module.bias)
        for head in self.pretext.values():
            nn.init.normal_(head.weight, std=0.01)
        if isinstance(self.head.fc, nn.Linear):
            nn.init.normal_(self.head.fc.weight, std=0.01)
            nn.init.zeros_(self.head.fc.bias)

    @torch.jit.ignore
    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-friendly): what ``config.json`` stores as ``model_args``."""
        return dict(
            halves=self.halves, pretext=self.pretext_targets, num_classes=self.num_classes,
            in_chans=self.in_chans, global_pool=self.head.global_pool.pool_type, drop_rate=self.drop_rate,
            pool5_stride=self.pool5_stride,
            layers={'convs': [list(conv) for conv in self.convs], 'fcs': [list(fc) for fc in self.fcs]},
        )

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r'^features\.branches\.\w+\.conv1', blocks=r'^features\.branches\.\w+\.conv(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError('gradient checkpointing is not supported: AlexNet is small')

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)
        self.head.to(**_device_dtype(self))  # the new classifier where the rest of the model is

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """conv1..conv5 (after ReLU, halves concatenated) and optionally the final features.

        Args:
            x: RGB (or greyscale) input in [0, 1], (N, in_chans, H, W).
            indices: last n taps if int, all if None, else the tap indices (0 = conv1).
            norm: timm API; there is no final norm.
            stop_early: skip the layers past the last tap; the final features are then that tap's output.
                ``intermediates_only`` skips them too (nothing else would use them).
            output_fmt: only 'NCHW'.
        """
        if output_fmt != 'NCHW':
            raise InputError(f"output_fmt: expected 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_ends), indices)
        last_layer = self.feature_ends[max_index] if stop_early or intermediates_only else -1
        lab = self.data_lab(x)
        taps: list[list[torch.Tensor]] = [[] for _ in take_indices]
        finals: list[torch.Tensor] = []
        for b, branch in enumerate(self.features.branches.values()):
            y = lab[:, self.features.starts[b]:self.features.stops[b]]
            tap = 0
            for i, layer in enumerate(branch):
                y = layer(y)
                if tap < len(self.feature_ends) and i == self.feature_ends[tap]:
                    if tap in take_indices:
                        taps[take_indices.index(tap)].append(y)
                    tap += 1
                if i == last_layer:
                    break
            finals.append(y)
        intermediates = [torch.cat(per_half, dim=1) for per_half in taps]
        if intermediates_only:
            return intermediates
        return torch.cat(finals, dim=1), intermediates

    def prune_intermediate_layers(
            self,
            indices: int | list[int] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> list[int]:
        """Drop the layers past the last kept tap (and the heads), as timm's ``features_only`` does."""
        take_indices, max_index = feature_take_indices(len(self.feature_ends), indices)
        prune_end = max_index < len(self.feature_ends) - 1
        for branch in self.features.branches.values():
            while len(branch) > self.feature_ends[max_index] + 1:
                del branch[len(branch) - 1]
        if prune_end:
            self.num_features = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.pre_logits = nn.Identity()
            self.pretext = nn.ModuleDict()
            self.pretext_targets = {}
            self.head_hidden_size = self.num_features
            self.head = ClassifierHead(self.num_features, 0, pool_type='', **_device_dtype(self))
            self.head.train(self.training)
            self.num_classes = 0
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """pool5 of all halves: (N, 256, h, w), the conv5 grid (13x13 for 227x227 input)."""
        return self.features(self.data_lab(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x)
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_pretext(
            self, x: torch.Tensor, is_lab: bool = False, halves: list[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each pretext head's raw output on the conv5 grid: logits for ``*_cl``, values for ``*_reg``.

        Args:
            x: RGB (or greyscale) in [0, 1], or with ``is_lab=True`` raw Lab (L in [0, 100]) (N, 3, H, W).
            halves: the halves to run (default: every half with a pretext head); the others are skipped,
                so colorizing runs the L half alone, at half the cost.
        Returns:
            half name -> (N, out_chans, h, w), h x w the conv5 grid.
        """
        names = list(self.pretext.keys()) if halves is None else halves
        missing = [name for name in names if name not in self.pretext]
        if missing:
            raise InputError(f'halves: expected halves with a pretext head {list(self.pretext.keys())}, got {missing}')
        lab = self.data_lab.normalize(x) if is_lab else self.data_lab(x)
        return {name: self.pretext[name](self.pre_logits.branches[name](self.features.forward_one(name, lab)))
                for name in names}


# --- checkpoints ----------------------------------------------------------------------------------

def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: SplitBrainAlexNet) -> dict[str, torch.Tensor]:
    """Fit a checkpoint of this architecture to ``model``, saying exactly which keys do not fit.

    Pretext heads in the checkpoint are dropped when the model has none (a classifier built for
    fine-tuning); a missing or differently sized classifier is timm's to handle (it re-initialises it).
    Anything else that is missing, unexpected or of another shape is an error, never skipped.
    """
    expected = model.state_dict()
    out = {k: v for k, v in state_dict.items() if not (k.startswith('pretext.') and len(model.pretext) == 0)}
    classifier = ('head.fc.weight', 'head.fc.bias')
    missing = sorted(k for k in expected if k not in out and k not in classifier)
    unexpected = sorted(k for k in out if k not in expected and k not in classifier)
    wrong_shape = sorted(
        f'{k}: checkpoint {tuple(out[k].shape)}, model {tuple(expected[k].shape)}'
        for k in out if k in expected and k not in classifier and out[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        raise WeightsError(
            f'expected the tensors of a SplitBrainAlexNet with halves {model.config()["halves"]}, got a checkpoint '
            f'with {_some(missing)} missing, {_some(unexpected)} unexpected, {_some(wrong_shape)} of another shape')
    return out


def _some(names: list[str], shown: int = 3) -> str:
    """A count and the first few names: the whole list of another architecture's keys would fill a screen."""
    if not names:
        return '0'
    more = f', and {len(names) - shown} more' if len(names) > shown else ''
    return f'{len(names)} ({", ".join(names[:shown])}{more})'


def _create_splitbrain_alexnet(variant: str, pretrained: bool = False, **kwargs: Any) -> SplitBrainAlexNet:
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3, 4))
    # timm's build_model_with_cfg, with the weight sources of splitbrain_hub.hub (the Hub, the shipped file).
    return build_model_with_weights(
        SplitBrainAlexNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=out_indices),
        **kwargs,
    )


def _cfg(url: str = '', **kwargs: Any) -> dict[str, Any]:
    return {
        'url': url, 'num_classes': 0, 'input_size': (3, 227, 227), 'pool_size': (13, 13),
        'min_input_size': (3, 96, 96), 'crop_pct': 1.0, 'interpolation': 'bilinear',
        # The model converts RGB in [0, 1] to Lab itself: timm's transforms must not normalise.
        'mean': (0., 0., 0.), 'std': (1., 1., 1.),
        'first_conv': 'data_lab', 'classifier': 'head.fc', 'paper_ids': 'arXiv:1611.09842',
        'paper_name': 'Split-Brain Autoencoders: Unsupervised Learning by Cross-Channel Prediction',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    # Trained by training/train.py on Tiny ImageNet train (64x64 photos upsampled to 128), see MODEL_CARD.md.
    'splitbrain_alexnet.tinyimagenet_128': _cfg(
        hf_hub_id='splitbrain-hub/splitbrain_alexnet.tinyimagenet_128',
        input_size=(3, 128, 128), pool_size=(6, 6),
        # Trained on ImageNet-derived photos: the ImageNet terms (non-commercial research) apply.
        license='other', notes=('Tiny ImageNet (tiny-imagenet-200) train split, 64x64 photos upsampled to 128',),
    ),
    'alexnet_lab.untrained': _cfg(),
})


@register_model
def splitbrain_alexnet(pretrained: bool = False, **kwargs: Any) -> SplitBrainAlexNet:
    """Split-brain autoencoder AlexNet: L half -> ab (cl), ab half -> L (cl); the paper's (cl, cl) network."""
    pretext = SPLIT_BRAIN_PRETEXT if kwargs.get('num_classes', 0) == 0 else {}
    model_args = dict(halves=SPLIT_BRAIN_HALVES, pretext=pretext)
    return _create_splitbrain_alexnet('splitbrain_alexnet', pretrained, **dict(model_args, **kwargs))


@register_model
def alexnet_lab(pretrained: bool = False, **kwargs: Any) -> SplitBrainAlexNet:
    """Unsplit AlexNet of the same total widths on Lab: the paper's single-network ablations."""
    model_args = dict(halves={'lab': [0, 1, 2]})
    return _create_splitbrain_alexnet('alexnet_lab', pretrained, **dict(model_args, **kwargs))
