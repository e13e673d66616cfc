"""The networks, timm-style: importing this registers ``splitbrain_alexnet`` and ``alexnet_lab`` with timm.

- ``splitbrain_alexnet.py``  the split-brain AlexNet (its layer table as data), pretext targets, timm cfgs

Imports ``splitbrain_hub.ops`` (colour conversion, bin counts), ``hub`` (the builder) and ``errors``.
"""
from .splitbrain_alexnet import (
    ALEXNET_LAYERS,
    PRETEXT_TARGETS,
    REGRESSION_SCALE,
    SPLIT_BRAIN_HALVES,
    SPLIT_BRAIN_PRETEXT,
    PretextTarget,
    SplitBrainAlexNet,
)

__all__ = ['ALEXNET_LAYERS', 'PRETEXT_TARGETS', 'REGRESSION_SCALE', 'SPLIT_BRAIN_HALVES', 'SPLIT_BRAIN_PRETEXT',
           'PretextTarget', 'SplitBrainAlexNet']
