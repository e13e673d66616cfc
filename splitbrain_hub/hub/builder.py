"""timm's ``build_model_with_cfg`` with this package's weight sources: what a model file's ``_create_*`` calls.

timm resolves where pretrained weights come from inside its builder; this builder does the same with the
order and the one fallback of ``sources.py`` (a folder, a file, the Hub, the shipped file), then hands timm
the resolved file. A model file stays free of weight-source logic, as timm's own are.
"""
from typing import Any

from timm.models import build_model_with_cfg

from .sources import resolve_pretrained_cfg_file

__all__ = ['build_model_with_weights']


def build_model_with_weights(model_cls: type, variant: str, pretrained: bool, **kwargs: Any) -> Any:
    """``timm.models.build_model_with_cfg(model_cls, variant, pretrained, **kwargs)``; with ``pretrained``, the
    cfg's ``file`` is first resolved by ``resolve_pretrained_cfg_file`` (``cache_dir`` as timm's)."""
    if pretrained:
        kwargs['pretrained_cfg'] = resolve_pretrained_cfg_file(
            variant, kwargs.pop('pretrained_cfg', None), kwargs.pop('pretrained_cfg_overlay', None),
            cache_dir=kwargs.get('cache_dir'))
    return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
