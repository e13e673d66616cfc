"""Importing this registers the models with timm."""
from .splitbrain_alexnet import PRETEXT_TARGETS, SplitBrainAlexNet

__all__ = ['PRETEXT_TARGETS', 'SplitBrainAlexNet']
