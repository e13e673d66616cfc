"""Weights on disk: safetensors + ``config.json``, and where pretrained weights come from.

A pretrained model's weights are looked for, in order:

1. a file the user names: ``timm.create_model(..., pretrained_cfg_overlay=dict(file=path))``;
2. the Hugging Face Hub repo in the cfg's ``hf_hub_id`` (its cache first; honours ``HF_HUB_OFFLINE=1``);
3. the file shipped in this package, ``splitbrain_hub/weights/<architecture>.<tag>.safetensors``.

A Hub miss (offline, unreachable, no such repo) falls back to 3 with one log line; with nothing
anywhere, ``WeightsError`` says where it looked. Only safetensors are read: a pickle never is.
"""
import hashlib
import json
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import WeightsError

_logger = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent / 'weights'
WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
DEFAULT_ARCHITECTURE = 'splitbrain_alexnet'
_HUB_PROBE_TIMEOUT_S = 2.0


def sha256_of(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


_UMASK = os.umask(0o022)  # reading the umask means setting it: set it straight back
os.umask(_UMASK)


def atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` then rename over ``path``: a killed process never leaves half a file.

    The temporary file is ``.<name>.<random>.tmp`` next to ``path`` and gets the permissions of an
    ordinary new file (mkstemp's are owner-only).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_safetensors(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file on the CPU; anything else is refused."""
    path = Path(path)
    if path.suffix != '.safetensors':
        raise WeightsError(f'{path}: expected a .safetensors file (pickled checkpoints are never loaded), '
                           f'got suffix {path.suffix!r}')
    if not path.is_file():
        raise WeightsError(f'{path}: expected a weights file, but it does not exist')
    try:
        return load_file(str(path), device='cpu')
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f'{path}: not a readable safetensors file ({e})') from e


def save_pretrained(model: torch.nn.Module, directory: Union[str, Path], dtype: Optional[torch.dtype] = None,
                    extra_config: Optional[Dict[str, Any]] = None) -> Path:
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
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    pretrained_cfg = {
        k: v for k, v in dict(getattr(model, 'pretrained_cfg', {}) or {}).items()
        if k not in ('file', 'state_dict', 'source') and v is not None
    }
    config = {
        'architecture': pretrained_cfg.get('architecture', 'splitbrain_alexnet'),
        'num_classes': model.num_classes,
        'num_features': model.num_features,
        'pretrained_cfg': pretrained_cfg,
        'model_args': model.config(),
        **(extra_config or {}),
    }
    weights_path = directory / WEIGHTS_NAME
    atomic_write(weights_path, lambda tmp: save_file(state_dict, tmp, metadata={'format': 'pt'}))
    atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + '\n'))
    return weights_path


def load_pretrained(path: Union[str, Path], **kwargs: Any) -> torch.nn.Module:
    """Build and load the model of a ``save_pretrained`` folder, its ``model.safetensors``, or a bare file.

    With a ``config.json`` next to the weights, its architecture and ``model_args`` build the model; a
    bare ``.safetensors`` file is taken to be the released recipe (``splitbrain_alexnet``), as the
    shipped weights are. ``kwargs`` override the model arguments (e.g. ``num_classes=10``).
    """
    import timm
    path = Path(path)
    weights_path = path / WEIGHTS_NAME if path.is_dir() else path
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


def shipped_weights_path(architecture: str, tag: str) -> Path:
    return SHIPPED_DIR / f'{architecture}.{tag}.safetensors'


def _hub_reachable() -> bool:
    """One short TCP connect to the Hub endpoint: huggingface_hub itself retries for ~25 s when offline."""
    from huggingface_hub import constants
    host = urlparse(constants.ENDPOINT).hostname or 'huggingface.co'
    try:
        socket.create_connection((host, 443), timeout=_HUB_PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def _hub_weights(hf_hub_id: str) -> Optional[Path]:
    """The Hub file from the HF cache or, when reachable and allowed, a download; else None and why."""
    try:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    except ImportError:
        return None
    cached = try_to_load_from_cache(hf_hub_id, WEIGHTS_NAME)
    if isinstance(cached, str):
        return Path(cached)
    if constants.HF_HUB_OFFLINE or not _hub_reachable():
        return None
    try:
        return Path(hf_hub_download(hf_hub_id, WEIGHTS_NAME))
    except Exception as e:  # the Hub's errors vary by version (404, auth, network): all mean "not there"
        _logger.debug('Hub download of %s failed: %s', hf_hub_id, e)
        return None


def resolve_pretrained_cfg_file(variant: str, pretrained_cfg=None, pretrained_cfg_overlay=None):
    """Resolve the pretrained cfg of ``variant`` with ``file`` set to the weights to load (see module doc)."""
    from timm.models import resolve_pretrained_cfg
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay)
    if cfg.file:
        if Path(cfg.file).suffix != '.safetensors' or not Path(cfg.file).is_file():
            raise WeightsError(f'pretrained_cfg file: expected an existing .safetensors file, got {cfg.file!r}')
        return cfg
    looked = []
    if cfg.hf_hub_id:
        hub_file = _hub_weights(cfg.hf_hub_id)
        if hub_file is not None:
            cfg.file = str(hub_file)
            return cfg
        looked.append(f'Hugging Face Hub {cfg.hf_hub_id!r} (cache, then network unless HF_HUB_OFFLINE=1)')
    shipped = shipped_weights_path(cfg.architecture, cfg.tag)
    if shipped.is_file():
        if looked:
            _logger.info('%s not available from the Hub; using the weights shipped in the package: %s',
                         cfg.hf_hub_id, shipped)
        cfg.file = str(shipped)
        return cfg
    looked.append(f'shipped file {shipped}')
    raise WeightsError(
        f'no pretrained weights for {variant!r}: looked in ' + '; '.join(looked) +
        ". Pass pretrained_cfg_overlay=dict(file='model.safetensors') or pretrained=False.")
