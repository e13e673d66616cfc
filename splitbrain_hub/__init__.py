"""splitbrain_hub: the split-brain autoencoder (Zhang, Isola, Efros, CVPR 2017) for timm and torch.hub.

Importing the package registers ``splitbrain_alexnet`` (and the unsplit ``alexnet_lab``) with timm.
ARCHITECTURE.md names the subpackages (``ops``, ``hub``, ``models``, ``batch``, ``deploy``, ``serve``) and
what each may import.
"""
from .deploy.caffe import convert_caffe
from .errors import ConversionError, InputError, SplitBrainError, WeightsError
from .hub import load_pretrained, save_pretrained
from .inference import colorize, extract_features, predict_lightness
from .models import SplitBrainAlexNet
from .version import __version__

__all__ = [
    'ConversionError', 'InputError', 'SplitBrainError', 'SplitBrainAlexNet', 'WeightsError',
    'colorize', 'convert_caffe', 'extract_features', 'load_pretrained', 'predict_lightness', 'save_pretrained', '__version__',
]
