"""Pretrained weights: where they come from, and how they are saved and loaded.

- ``sources.py``  the order of sources (folder, file, Hugging Face Hub, the shipped file) and the one fallback
- ``storage.py``  ``save_pretrained`` / ``load_pretrained`` folders, ``.safetensors`` files, sha256
- ``builder.py``  timm's ``build_model_with_cfg`` with those sources: what the model files call

Imports ``splitbrain_hub.errors`` and ``files`` only (and timm, huggingface_hub, safetensors); never the models:
``load_pretrained`` builds a model by its timm name.
"""
from .builder import build_model_with_weights
from .sources import (
    CONFIG_NAME,
    DEFAULT_ARCHITECTURE,
    SHIPPED_DIR,
    WEIGHTS_NAME,
    resolve_pretrained_cfg_file,
    shipped_weights_path,
)
from .storage import load_pretrained, load_safetensors, save_pretrained, sha256_of, weights_file

__all__ = ['CONFIG_NAME', 'DEFAULT_ARCHITECTURE', 'SHIPPED_DIR', 'WEIGHTS_NAME', 'build_model_with_weights',
           'load_pretrained', 'load_safetensors', 'resolve_pretrained_cfg_file', 'save_pretrained', 'sha256_of',
           'shipped_weights_path', 'weights_file']
