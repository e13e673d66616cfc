"""timm's ``build_model_with_cfg`` with this package's weight sources: what a model file's ``_create_*`` calls.

timm resolves where pretrained weights come from inside its builder; this builder does the same with the
order and the one fallback of ``sources.py`` (a folder, a file, the Hub, the shipped file), then hands timm
the resolved file, checked first (``integrity.py``). A model file stays free of weight-source logic, as
timm's own are. Whatever is wrong with the weights is a ``WeightsError`` that names the file.
"""
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from timm.models import build_model_with_cfg

from ..errors import WeightsError
from .integrity import check_finite, check_safetensors_file
from .sources import resolve_pretrained_cfg_file

__all__ = ['build_model_with_weights']


def build_model_with_weights(model_cls: type, variant: str, pretrained: bool, **kwargs: Any) -> Any:
    """``timm.models.build_model_with_cfg(model_cls, variant, pretrained, **kwargs)``; with ``pretrained``, the
    cfg's ``file`` is first resolved by ``resolve_pretrained_cfg_file`` (``cache_dir`` as timm's) and checked."""
    if not pretrained:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    cfg = resolve_pretrained_cfg_file(variant, kwargs.pop('pretrained_cfg', None),
                                      kwargs.pop('pretrained_cfg_overlay', None), cache_dir=kwargs.get('cache_dir'))
    if cfg.state_dict is not None:  # a state dict handed in: no file to name or check
        return build_model_with_cfg(model_cls, variant, pretrained, pretrained_cfg=cfg, **kwargs)
    path = Path(cfg.file)
    check_safetensors_file(path)
    kwargs['pretrained_filter_fn'] = _checked_filter(kwargs.get('pretrained_filter_fn'), path)
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, pretrained_cfg=cfg, **kwargs)
    except SafetensorError as e:  # a whole file whose header or tensors safetensors still refuses
        raise WeightsError(f'{path}: not a readable safetensors file ({e})') from e


def _checked_filter(filter_fn: Callable | None, path: Path) -> Callable:
    """The model's checkpoint filter, after a check for NaN and inf, with ``path`` in its errors."""
    def checked(state_dict: dict, model: Any) -> dict:
        check_finite(state_dict, path)
        try:
            return filter_fn(state_dict, model) if filter_fn is not None else state_dict
        except WeightsError as e:
            raise WeightsError(f'{path}: {e}') from e
    return checked
