"""The paper's pretext tasks as data: one ``ObjectiveSpec`` per row of Table 2, and the loss they define.

A spec names the network (a timm architecture with its ``halves`` and ``pretext`` heads) and a list of
loss terms. A term reads one pretext head, says which Lab channels the network may see for it (the
others are hidden: set to the value the ``data_lab`` layer maps to 0, as the paper zeroes them), an
optional input dropout, the target, the loss type and its weight. Terms with the same visible input
share one forward pass. A new split (e.g. RGB <-> depth) or a new ablation is a new table entry.

Targets live on the head's output grid (the conv5 grid): the Lab image is downsampled to the head's
h x w by area averaging (``adaptive_avg_pool2d``), so each target cell is the mean colour of the input
pixels it covers, then encoded:

* ``cl``: cross-entropy against soft-encoded bins (``ops.bins.soft_encode``, 5 nearest, sigma 5), or
  the nearest bin with ``soft=False``; ab terms may be class-rebalanced (``ops.bins.rebalance_weights``
  from the ab prior of the training data; each pixel weighs ``w[nearest bin]``, Zhang et al. 2016).
* ``reg``: l2 (sum over channels, mean over pixels) against Lab / ``REGRESSION_SCALE``.
* ``class``: cross-entropy of the classifier on the image label (the supervised upper bound).

Greyscale photos carry no colour signal, so they weigh 0 in every Lab term (a grey photo of a colour
scene would teach "ab = 0"; its "ab" input is empty); only the supervised term uses them.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from splitbrain_hub.errors import InputError
from splitbrain_hub.models import PRETEXT_TARGETS, REGRESSION_SCALE, SPLIT_BRAIN_HALVES, SPLIT_BRAIN_PRETEXT
from splitbrain_hub.ops.bins import ab_bin_centers, hard_encode, l_bin_centers, rebalance_weights, soft_encode

LAB = (0, 1, 2)
L_ONLY = (0,)
AB_ONLY = (1, 2)
TARGET_CHANNELS: dict[str, tuple[int, ...]] = {'l': L_ONLY, 'ab': AB_ONLY, 'lab': LAB}


@dataclass(frozen=True)
class LossTerm:
    """One term of an objective: ``weight * loss(head(input with only `visible` channels), target)``."""
    head: str                       # pretext head (a half's name), or 'classifier' for the labels
    target: str                     # 'l', 'ab', 'lab' (Lab channels) or 'class'
    loss: str                       # 'cl' (cross-entropy over bins), 'reg' (l2) or 'class'
    visible: tuple[int, ...] = LAB  # Lab channels the network sees; the others are hidden
    input_drop: float = 0.0         # probability of hiding each input value (denoising autoencoder)
    weight: float = 1.0


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    architecture: str                     # timm model name
    halves: dict[str, list[int]]
    pretext: dict[str, str]               # half -> PRETEXT_TARGETS name
    terms: tuple[LossTerm, ...]
    num_classes: int = 0
    description: str = ''

    def model_kwargs(self) -> dict:
        return dict(halves=self.halves, pretext=self.pretext, num_classes=self.num_classes)

    @property
    def uses_colour(self) -> bool:
        return any(term.loss != 'class' for term in self.terms)


SPLIT = SPLIT_BRAIN_HALVES
WHOLE = {'lab': [0, 1, 2]}
L_NET = {'l': [0]}
AB_NET = {'ab': [1, 2]}
THIRD = 1 / 3


def _spec(name, architecture, halves, pretext, *terms, num_classes=0, description=''):
    return name, ObjectiveSpec(name, architecture, halves, pretext, tuple(terms), num_classes, description)


# Table 2, in the paper's order, plus the supervised upper bound ("ImageNet-labels").
OBJECTIVES: dict[str, ObjectiveSpec] = dict([
    _spec('lab_to_lab', 'alexnet_lab', WHOLE, {'lab': 'lab_reg'},
          LossTerm('lab', 'lab', 'reg'), description='Lab->Lab: autoencoder, l2'),
    _spec('lab_drop50_to_lab', 'alexnet_lab', WHOLE, {'lab': 'lab_reg'},
          LossTerm('lab', 'lab', 'reg', input_drop=0.5), description='Lab(drop50)->Lab: denoising autoencoder'),
    # The single cross-channel encoders see only their input channels (the paper's L->ab network takes
    # L): one full-width half, so a linear probe reads the same features the pretext task trained.
    _spec('l_to_ab_cl', 'alexnet_lab', L_NET, {'l': 'ab_cl'},
          LossTerm('l', 'ab', 'cl'), description='L->ab (cl): colorization'),
    _spec('l_to_ab_reg', 'alexnet_lab', L_NET, {'l': 'ab_reg'},
          LossTerm('l', 'ab', 'reg'), description='L->ab (reg): colorization, l2'),
    _spec('ab_to_l_cl', 'alexnet_lab', AB_NET, {'ab': 'l_cl'},
          LossTerm('ab', 'l', 'cl'), description='ab->L (cl): grayscale prediction'),
    _spec('ab_to_l_reg', 'alexnet_lab', AB_NET, {'ab': 'l_reg'},
          LossTerm('ab', 'l', 'reg'), description='ab->L (reg): grayscale prediction, l2'),
    # Equation 4: one network does both mappings (regression, as the paper says), missing channels hidden.
    _spec('l_ab_to_ab_l', 'alexnet_lab', WHOLE, {'lab': 'lab_reg'},
          LossTerm('lab', 'ab', 'reg', visible=L_ONLY), LossTerm('lab', 'l', 'reg', visible=AB_ONLY),
          description='(L,ab)->(ab,L): one network, both cross-channel tasks (Eq. 4)'),
    # Equation 5 with lambda = 1/3: the autoencoder term mixed in.
    _spec('l_ab_lab_to_ab_l_lab', 'alexnet_lab', WHOLE, {'lab': 'lab_reg'},
          LossTerm('lab', 'ab', 'reg', visible=L_ONLY, weight=THIRD),
          LossTerm('lab', 'l', 'reg', visible=AB_ONLY, weight=THIRD),
          LossTerm('lab', 'lab', 'reg', weight=1 - 2 * THIRD),
          description='(L,ab,Lab)->(ab,L,Lab): Eq. 5, lambda = 1/3'),
    _spec('ensembled_l_to_ab', 'splitbrain_alexnet', {'l_half_cl': [0], 'l_half_reg': [0]},
          {'l_half_cl': 'ab_cl', 'l_half_reg': 'ab_reg'},
          LossTerm('l_half_cl', 'ab', 'cl'), LossTerm('l_half_reg', 'ab', 'reg'),
          description='Ensembled L->ab: two halves on L, one cl, one reg'),
    _spec('split_brain_reg', 'splitbrain_alexnet', SPLIT, {'l_half': 'ab_reg', 'ab_half': 'l_reg'},
          LossTerm('l_half', 'ab', 'reg'), LossTerm('ab_half', 'l', 'reg'),
          description='Split-Brain Auto (reg,reg)'),
    _spec('split_brain_cl', 'splitbrain_alexnet', SPLIT, SPLIT_BRAIN_PRETEXT,
          LossTerm('l_half', 'ab', 'cl'), LossTerm('ab_half', 'l', 'cl'),
          description="Split-Brain Auto (cl,cl): the paper's full method (default)"),
    _spec('supervised', 'alexnet_lab', WHOLE, {},
          LossTerm('classifier', 'class', 'class'), num_classes=200,
          description='ImageNet-labels row: the unsplit network trained on the class labels'),
])
DEFAULT_OBJECTIVE = 'split_brain_cl'


def get_objective(name: str) -> ObjectiveSpec:
    if name not in OBJECTIVES:
        raise InputError(f'objective: expected one of {sorted(OBJECTIVES)}, got {name!r}')
    return OBJECTIVES[name]


def downsample(lab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Lab (N, 3, H, W) -> the head grid by area averaging: each cell is the mean of the pixels it covers."""
    return F.adaptive_avg_pool2d(lab, size)


class Objective(nn.Module):
    """The model and its loss for one spec: ``forward(lab, labels, colour)`` -> (total loss, loss per term).

    Everything runs batched on the model's device; DistributedDataParallel wraps this module, so the
    pretext heads are reached through ``forward``. ``ab_prior`` (Q,) enables rebalancing of ab cl terms.
    """

    def __init__(self, model: nn.Module, spec: ObjectiveSpec, soft: bool = True,
                 ab_prior: torch.Tensor | None = None, rebalance_lambda: float = 0.5,
                 rebalance_sigma: float = 5.0) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.soft = soft
        for term in spec.terms:
            self._check_term(term)
        self.register_buffer('ab_centers', ab_bin_centers(), persistent=False)
        self.register_buffer('l_centers', l_bin_centers(), persistent=False)
        weights = None
        if ab_prior is not None:
            weights = rebalance_weights(ab_prior.double(), self.ab_centers.double(),
                                        rebalance_sigma, rebalance_lambda).float()
        self.register_buffer('ab_weights', weights, persistent=False)
        # Raw Lab value of a hidden channel: the one data_lab maps to 0 (L = 50, a = b = 0).
        data_lab = model.data_lab
        self.register_buffer('hidden_value', (-data_lab.bias / data_lab.weight.flatten()).reshape(1, 3, 1, 1),
                             persistent=False)
        groups: dict[tuple, list[LossTerm]] = {}
        for term in spec.terms:
            groups.setdefault((term.visible, term.input_drop), []).append(term)
        self.groups = list(groups.items())

    def _check_term(self, term: LossTerm) -> None:
        spec = self.spec
        if term.loss == 'class':
            if spec.num_classes <= 0:
                raise InputError(f'{spec.name}: a class term needs num_classes > 0, got {spec.num_classes}')
            return
        if term.head not in spec.pretext:
            raise InputError(f'{spec.name}: term head: expected one of {sorted(spec.pretext)}, got {term.head!r}')
        head = PRETEXT_TARGETS[spec.pretext[term.head]]
        channels = TARGET_CHANNELS[term.target]
        if term.loss == 'cl' and (not head.classification or head.channels != channels):
            raise InputError(f'{spec.name}: cl term on {term.target}: expected a {term.target}_cl head, '
                             f'got {spec.pretext[term.head]}')
        if term.loss == 'reg' and (head.classification or not set(channels) <= set(head.channels)):
            raise InputError(f'{spec.name}: reg term on {term.target}: expected a regression head covering '
                             f'channels {channels}, got {spec.pretext[term.head]}')

    def _hide(self, lab: torch.Tensor, visible: tuple[int, ...], input_drop: float) -> torch.Tensor:
        if visible == LAB and input_drop == 0:
            return lab
        keep = torch.zeros(1, 3, 1, 1, dtype=torch.bool, device=lab.device)
        keep[:, list(visible)] = True
        if input_drop > 0:
            keep = keep & (torch.rand_like(lab) >= input_drop)
        return torch.where(keep, lab, self.hidden_value.to(lab.dtype))

    def _term_loss(self, term: LossTerm, output: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (N,) of one term, in fp32 also under autocast (targets, soft encoding, log-softmax)."""
        with torch.autocast(output.device.type, enabled=False):
            return self._term_loss_fp32(term, output.float(), lab.float())

    def _term_loss_fp32(self, term: LossTerm, output: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        target = downsample(lab, output.shape[-2:])[:, list(TARGET_CHANNELS[term.target])]
        if term.loss == 'reg':
            head_channels = PRETEXT_TARGETS[self.spec.pretext[term.head]].channels
            output = output[:, [head_channels.index(c) for c in TARGET_CHANNELS[term.target]]]
            return (output - target / REGRESSION_SCALE).square().sum(1).flatten(1).mean(1)
        centers = self.ab_centers if term.target == 'ab' else self.l_centers
        nearest = hard_encode(target, centers)
        if self.soft:
            per_pixel = -(soft_encode(target, centers) * F.log_softmax(output, dim=1)).sum(1)
        else:
            per_pixel = F.cross_entropy(output, nearest, reduction='none')
        if term.target == 'ab' and self.ab_weights is not None:
            per_pixel = per_pixel * self.ab_weights[nearest]
        return per_pixel.flatten(1).mean(1)

    def forward(self, lab: torch.Tensor, labels: torch.Tensor, colour: torch.Tensor):
        """lab: raw Lab (N, 3, H, W) float32; labels (N,) int64; colour (N,) bool (False: greyscale photo)."""
        colour_weight = colour.float()
        losses: dict[str, torch.Tensor] = {}
        for (visible, input_drop), terms in self.groups:
            if terms[0].loss == 'class':  # the supervised row: the classifier on the whole Lab image
                logits = self.model.forward_head(self.model.features(self.model.data_lab.normalize(lab)))
                losses[term_name(terms[0])] = F.cross_entropy(logits.float(), labels)
                continue
            outputs = self.model.forward_pretext(self._hide(lab, visible, input_drop), is_lab=True)
            for term in terms:
                per_sample = self._term_loss(term, outputs[term.head], lab)
                losses[term_name(term)] = (per_sample * colour_weight).sum() / colour_weight.sum().clamp_min(1.0)
        total = sum(term.weight * losses[term_name(term)] for term in self.spec.terms)
        return total, losses


def term_name(term: LossTerm) -> str:
    """The metrics key of a term, e.g. ``l_half:ab_cl``."""
    return f'{term.head}:{term.target}_{term.loss}'
