"""Where and in which precision to compute: the device, and bf16 autocast where it runs bf16 natively, else fp32.

One setting, ``amp``, shared by the trainer, its benchmark, the evaluation and inference:

* ``'auto'``: bf16 on CUDA devices that support it and on CPUs with native bf16 instructions
  (AVX-512 BF16 or AMX), fp32 otherwise. Detected when called, so a checkpoint moved to another
  machine picks what that machine runs well.
* ``'bf16'``: bf16 autocast wherever the device can run it (slow, emulated, on older CPUs).
* ``'off'``: fp32 throughout.

Autocast changes only the matmul-like ops (convolutions, linear); callers keep their losses,
soft-encodings and colour conversions in fp32 by computing them outside the autocast region or under
``torch.autocast(..., enabled=False)``.

Example:
    >>> import torch
    >>> autocast_dtype('off', torch.device('cpu')) is None
    True
    >>> autocast_dtype('bf16', torch.device('cpu'))
    torch.bfloat16
"""
from contextlib import AbstractContextManager

import torch

from ..errors import InputError

__all__ = ['AMP_SETTINGS', 'autocast', 'autocast_dtype', 'native_bf16', 'precision_name', 'resolve_device']

AMP_SETTINGS = ('auto', 'bf16', 'off')


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` computes bf16 in hardware (CUDA with bf16 support, CPU with AVX-512 BF16 or AMX)."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == 'cpu':
        # Private but long-standing helpers of torch.cpu (the CPU capability checks oneDNN itself uses).
        checks = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for an ``amp`` setting on ``device``, or None for fp32."""
    if amp not in AMP_SETTINGS:
        raise InputError(f'amp: expected one of {AMP_SETTINGS}, got {amp!r}')
    if amp == 'off' or (amp == 'auto' and not native_bf16(device)):
        return None
    return torch.bfloat16


def precision_name(dtype: torch.dtype | None) -> str:
    """'bf16' or 'fp32': how logs, checkpoints and model cards name the precision used."""
    return {None: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[dtype]


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` for ``device`` with ``dtype``; disabled (plain fp32, also inside an outer autocast) when
    ``dtype`` is None."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; None picks CUDA, then Apple's MPS, then the CPU.

    Raises:
        InputError: not a device name, or a device this machine does not have.
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device('cuda')
        mps = getattr(torch.backends, 'mps', None)
        return torch.device('mps' if mps is not None and mps.is_available() else 'cpu')
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from e
    available = {'cuda': torch.cuda.is_available, 'mps': lambda: resolve_device(None).type == 'mps'}
    if device.type in available and not available[device.type]():
        raise InputError(f'device: expected an available device, got {str(device)!r} (not available here)')
    return device
