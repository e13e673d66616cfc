"""Weights on disk: ``save_pretrained`` folders (safetensors + ``config.json``) and bare ``.safetensors`` files.

A folder is what a Hub repo serves and timm loads as is: ``model.safetensors`` and a ``config.json`` with
the architecture, its ``model_args`` and the pretrained cfg. Only safetensors are read: a pickle never is.
Where the pretrained weights come from (the Hub, the shipped file) is ``sources.py``'s.
"""
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..errors import WeightsError
from ..files import atomic_write, atomic_write_bytes, make_folder
from .integrity import check_finite, check_safetensors_file
from .sources import CONFIG_NAME, DEFAULT_ARCHITECTURE, WEIGHTS_NAME, resolve_pretrained_cfg_file

__all__ = ['load_pretrained', 'load_safetensors', 'save_pretrained', 'sha256_of', 'weights_file']


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file on the CPU; anything else, truncated or not finite is refused."""
    path = Path(path)
    if path.suffix != '.safetensors':
        raise WeightsError(f'{path}: expected a .safetensors file (pickled checkpoints are never loaded), '
                           f'got suffix {path.suffix!r}')
    if not path.is_file():
        raise WeightsError(f'{path}: expected a weights file, but it does not exist')
    check_safetensors_file(path)
    try:
        state_dict = load_file(str(path), device='cpu')
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f'{path}: not a readable safetensors file ({e})') from e
    check_finite(state_dict, path)
    return state_dict


def save_pretrained(model: torch.nn.Module, directory: str | Path, dtype: torch.dtype | None = None,
                    extra_config: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` in the layout a Hub repo (and timm) serves as is.

    Args:
        model: a ``SplitBrainAlexNet`` (made by timm, so it carries ``pretrained_cfg``).
        directory: created if missing; existing files are replaced atomically.
        dtype: store floating tensors in this dtype (e.g. ``torch.float16`` for the release).
        extra_config: merged into ``config.json`` (e.g. the training recipe).
    Returns:
        The path of ``model.safetensors``.
    """
    directory = Path(directory)
    make_folder(directory)
    state_dict = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    pretrained_cfg = {
        k: v for k, v in dict(getattr(model, 'pretrained_cfg', {}) or {}).items()
        if k not in ('file', 'state_dict', 'source') and v is not None
    }
    config = {
        'architecture': pretrained_cfg.get('architecture', DEFAULT_ARCHITECTURE),
        'num_classes': model.num_classes,
        'num_features': model.num_features,
        'pretrained_cfg': pretrained_cfg,
        'model_args': model.config(),
        **(extra_config or {}),
    }
    weights_path = directory / WEIGHTS_NAME
    # In memory first: safetensors words a full disk its own way, atomic_write_bytes keeps the system's error.
    atomic_write_bytes(weights_path, save(state_dict, metadata={'format': 'pt'}))
    atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + '\n'))
    return weights_path


def weights_file(path: str | Path | None) -> Path:
    """The weights file ``path`` names: a ``save_pretrained`` folder's ``model.safetensors``, ``path`` itself,
    or for None the pretrained model's file (found as ``timm.create_model(DEFAULT_ARCHITECTURE, pretrained=True)``
    finds it)."""
    if path is None:
        return Path(resolve_pretrained_cfg_file(DEFAULT_ARCHITECTURE).file)
    path = Path(path)
    return path / WEIGHTS_NAME if path.is_dir() else path


def load_pretrained(path: str | Path, **kwargs: Any) -> torch.nn.Module:
    """Build and load the model of a ``save_pretrained`` folder, its ``model.safetensors``, or a bare file.

    With a ``config.json`` next to the weights, its architecture and ``model_args`` build the model; a
    bare ``.safetensors`` file is taken to be the released recipe (``splitbrain_alexnet``), as the
    shipped weights are. ``kwargs`` override the model arguments (e.g. ``num_classes=10``).
    """
    import timm
    weights_path = weights_file(path)
    if not weights_path.is_file():
        raise WeightsError(f'{path}: expected a save_pretrained folder or a .safetensors file, but it does not exist')
    config_path = weights_path.parent / CONFIG_NAME
    if not config_path.is_file():
        return timm.create_model(DEFAULT_ARCHITECTURE, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(weights_path)), **kwargs)
    try:
        config = json.loads(config_path.read_text())
        architecture = config['architecture']
        model_args = dict(config.get('model_args', {}), **kwargs)
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f'{config_path}: expected a config.json with "architecture" and "model_args" ({e})') from e
    overlay = dict(config.get('pretrained_cfg', {}), file=str(weights_path))
    return timm.create_model(architecture, pretrained=True, pretrained_cfg_overlay=overlay, **model_args)
