"""Is a weights file whole and sound? Checked before a model is built from it, so a bad file is a
``WeightsError`` naming it and what is wrong, never a deserializer's message or a model that outputs NaN.

A safetensors file is an 8-byte little-endian header size, a JSON header whose entries give each tensor's
``data_offsets`` into the data that follows, then the data: the header alone says how long the file must
be, so a truncated download or a file of another kind is caught without reading a tensor.
"""
import json
from pathlib import Path

import torch

from ..errors import WeightsError

__all__ = ['check_finite', 'check_safetensors_file']

# safetensors' own limit on the header; a larger one means the first 8 bytes are not a header size.
_MAX_HEADER_BYTES = 100_000_000


def check_safetensors_file(path: Path) -> None:
    """Raise ``WeightsError`` unless ``path`` is as long as its safetensors header says."""
    size = path.stat().st_size
    with open(path, 'rb') as f:
        header_size = int.from_bytes(f.read(8), 'little')
        if header_size > _MAX_HEADER_BYTES:
            raise WeightsError(f'{path}: not a safetensors file: expected a header of at most {_MAX_HEADER_BYTES:,} '
                               f'bytes, its first 8 bytes announce {header_size:,}')
        if size < 8 or 8 + header_size > size:
            raise WeightsError(f'{path}: not a safetensors file or truncated: {size:,} of at least '
                               f'{8 + header_size:,} bytes')
        header = f.read(header_size)
    try:
        entries = json.loads(header)
        data_size = max((entry['data_offsets'][1] for name, entry in entries.items() if name != '__metadata__'),
                        default=0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise WeightsError(f'{path}: not a safetensors file: expected a JSON header of tensors with data_offsets '
                           f'({type(e).__name__}: {e})') from e
    expected = 8 + header_size + data_size
    if size != expected:
        raise WeightsError(f'{path}: not a safetensors file or truncated: {size:,} of {expected:,} bytes')


def check_finite(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise ``WeightsError`` if a floating tensor of ``state_dict`` (read from ``path``) holds NaN or inf."""
    bad = [f'{name} ({int((~torch.isfinite(tensor)).sum())} values)' for name, tensor in state_dict.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        shown = ', '.join(bad[:3]) + (f' and {len(bad) - 3} more tensors' if len(bad) > 3 else '')
        raise WeightsError(f'{path}: expected finite weights, got NaN or inf in {shown}')
