"""The maths on tensors, no files and no model: colour conversion, the paper's bins, upsampling, precision.

- ``color.py``      sRGB (D65) <-> CIE Lab, checked and unchecked (for inside ``forward`` and exported graphs)
- ``bins.py``       the ab grid and L bins: soft/hard encoding, rebalancing weights, the annealed mean
- ``upsample.py``   the coarse ab grid to the photo's resolution: bilinear or the guided filter
- ``precision.py``  the device and the autocast dtype (``amp``: 'auto', 'bf16', 'off')
- ``tracing.py``    whether a graph is being recorded (then no Python loops over chunks)

Imports ``splitbrain_hub.errors`` only.
"""
from .bins import (
    AB_GRID_SIZE,
    DEFAULT_TEMPERATURE,
    L_BIN_COUNT,
    ab_bin_centers,
    ab_bin_count,
    annealed_mean,
    annealed_mean_from_logits,
    hard_encode,
    l_bin_centers,
    rebalance_weights,
    soft_encode,
)
from .color import lab_to_rgb, rgb_to_lab
from .precision import AMP_SETTINGS, autocast, autocast_dtype, precision_name, resolve_device
from .upsample import DEFAULT_UPSAMPLE, UPSAMPLERS, Bilinear, GuidedFilter, guided_upsample, resolve_upsampler

__all__ = ['AB_GRID_SIZE', 'AMP_SETTINGS', 'Bilinear', 'DEFAULT_TEMPERATURE', 'DEFAULT_UPSAMPLE', 'GuidedFilter',
           'L_BIN_COUNT', 'UPSAMPLERS', 'ab_bin_centers', 'ab_bin_count', 'annealed_mean', 'annealed_mean_from_logits',
           'autocast', 'autocast_dtype', 'guided_upsample', 'hard_encode', 'l_bin_centers', 'lab_to_rgb',
           'precision_name', 'rebalance_weights', 'resolve_device', 'resolve_upsampler', 'rgb_to_lab', 'soft_encode']
