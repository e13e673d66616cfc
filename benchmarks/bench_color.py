"""Colour conversion alone: splitbrain_hub.ops.color (torch) vs scikit-image, rgb -> Lab -> rgb at 1 megapixel.

    python benchmarks/bench_color.py [--rounds 7]
"""
import argparse

import numpy as np
import torch
from _timing import add_threads_argument, apply_threads, machine, measure
from skimage import color as skcolor

from splitbrain_hub.ops.color import lab_to_rgb, rgb_to_lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=7)
    add_threads_argument(parser)
    args = parser.parse_args()
    apply_threads(args)
    rgb = np.random.default_rng(0).random((1000, 1000, 3))
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().contiguous()
    np.testing.assert_allclose(rgb_to_lab(tensor)[0].permute(1, 2, 0).numpy(), skcolor.rgb2lab(rgb), atol=2e-3)
    times = measure({
        'scikit-image rgb2lab': lambda: skcolor.rgb2lab(rgb),
        'scikit-image rgb2lab + lab2rgb': lambda: skcolor.lab2rgb(skcolor.rgb2lab(rgb)),
        'torch rgb_to_lab': lambda: rgb_to_lab(tensor),
        'torch rgb_to_lab + lab_to_rgb': lambda: lab_to_rgb(rgb_to_lab(tensor)),
    }, rounds=args.rounds)
    print(f'# colour conversion, 1000x1000 RGB; {machine()}')
    for name, seconds in times.items():
        print(f'{name:32s} {seconds * 1e3:8.1f} ms')
    for what, ours, theirs in (('rgb -> Lab', 'torch rgb_to_lab', 'scikit-image rgb2lab'),
                               ('rgb -> Lab -> rgb', 'torch rgb_to_lab + lab_to_rgb', 'scikit-image rgb2lab + lab2rgb')):
        print(f'{what}: torch takes {times[ours] / times[theirs]:.2f}x the time of scikit-image '
              f'({times[theirs] / times[ours]:.1f}x faster)')


if __name__ == '__main__':
    main()
