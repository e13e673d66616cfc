"""Does bf16 change what a user sees? colorize / predict_lightness in bf16 vs fp32 on the Kodak photos.

    python benchmarks/bench_precision.py [--kodak ../shared/datasets/kodak] [--weights PATH]

The rule (issue 11) for running the network in bf16 by default: on every Kodak photo (768x512, held out,
never trained on), the 8-bit RGB result differs from fp32's by at most 1 level on >= 99.9 % of values.
Prints, per task, the share of 8-bit values within 1 level (worst photo and all photos), the largest
difference, and the time of both precisions measured in the same run.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _timing import add_threads_argument, apply_threads, machine
from PIL import Image

from splitbrain_hub import colorize, predict_lightness
from splitbrain_hub.inference import load_model

KODAK = Path(__file__).resolve().parents[2] / 'shared' / 'datasets' / 'kodak'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--kodak', type=Path, default=KODAK)
    parser.add_argument('--weights', help='save_pretrained folder or .safetensors (default: the pretrained model)')
    add_threads_argument(parser)
    args = parser.parse_args()
    apply_threads(args)
    model = load_model(args.weights, 'cpu')
    photos = sorted(args.kodak.glob('*.png'))
    if not photos:
        raise SystemExit(f'no .png photos in {args.kodak}')
    print(f'# bf16 vs fp32 on {len(photos)} Kodak photos; {machine()}')
    for name, task in (('colorize', colorize), ('predict_lightness', predict_lightness)):
        within, largest, seconds = [], 0, {'off': 0.0, 'bf16': 0.0}
        for path in photos:
            photo = np.asarray(Image.open(path).convert('RGB'))
            results = {}
            for amp in ('off', 'bf16'):
                start = time.perf_counter()
                results[amp] = task(photo, model=model, amp=amp).astype(np.int16)
                seconds[amp] += time.perf_counter() - start
            difference = np.abs(results['off'] - results['bf16'])
            within.append((difference <= 1).mean())
            largest = max(largest, int(difference.max()))
        verdict = 'holds' if min(within) >= 0.999 else 'fails'
        print(f'{name:18s} within 1 level: worst photo {100 * min(within):.3f} %, all photos '
              f'{100 * np.mean(within):.3f} %, largest difference {largest} levels; rule (>= 99.9 % on every '
              f'photo) {verdict}; time fp32 {seconds["off"]:.2f} s, bf16 {seconds["bf16"]:.2f} s '
              f'({seconds["off"] / seconds["bf16"]:.2f}x)')


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    main()
