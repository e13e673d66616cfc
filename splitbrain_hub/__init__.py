"""splitbrain_hub: the split-brain autoencoder (Zhang, Isola, Efros, CVPR 2017) for timm and torch.hub.

Importing the package registers ``splitbrain_alexnet`` (and the unsplit ``alexnet_lab``) with timm.
"""
from .caffe import convert_caffe
from .errors import ConversionError, InputError, SplitBrainError, WeightsError
from .inference import colorize, extract_features, predict_lightness
from .models import SplitBrainAlexNet
from .weights import load_pretrained, save_pretrained

__version__ = '0.1.0'

__all__ = [
    'ConversionError', 'InputError', 'SplitBrainAlexNet', 'SplitBrainError', 'WeightsError',
    'colorize', 'convert_caffe', 'extract_features', 'load_pretrained', 'predict_lightness', 'save_pretrained', '__version__',
]
