"""colorize on a 1024x768 photo vs what a scikit-image pipeline pays for colour conversion alone.

    python benchmarks/bench_colorize.py [--weights PATH] [--rounds 7]

The baseline is ``skimage.color.rgb2lab`` + ``lab2rgb`` on the same image. Goal (issue 11): the whole
``colorize`` call at its defaults (uint8 array in, uint8 array out; the network in bf16 where the CPU has it
natively) takes <= 0.4x that time; the fp32 call (``amp='off'``) is timed beside it. Timing does not depend
on the weights' values; without shipped weights a randomly initialised model of the release's
configuration (input 128x128) is used, and the script says so.
"""
import argparse

import numpy as np
import timm
import torch
from PIL import Image
from skimage import color as skcolor

from _timing import add_threads_argument, apply_threads, machine, measure
from splitbrain_hub import WeightsError, colorize
from splitbrain_hub.images import SAMPLE_PHOTO
from splitbrain_hub.inference import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', help='save_pretrained folder or .safetensors (default: the pretrained model)')
    parser.add_argument('--rounds', type=int, default=7)
    add_threads_argument(parser)
    args = parser.parse_args()
    apply_threads(args)
    try:
        model, source = load_model(args.weights, 'cpu'), args.weights or 'pretrained'
    except WeightsError:
        model, source = timm.create_model('splitbrain_alexnet').eval(), 'random init (no shipped weights yet)'
    photo = np.asarray(Image.open(SAMPLE_PHOTO).convert('RGB').resize((1024, 768), Image.BICUBIC))
    times = measure({
        'scikit-image rgb2lab + lab2rgb': lambda: skcolor.lab2rgb(skcolor.rgb2lab(photo)),
        'splitbrain_hub.colorize': lambda: colorize(photo, model=model),
        'colorize, amp=off (fp32)': lambda: colorize(photo, model=model, amp='off'),
    }, rounds=args.rounds)
    size = model.pretrained_cfg['input_size'][-2:]
    print(f'# colorize, 1024x768 uint8 photo, network input {size[0]}x{size[1]}, weights: {source}; {machine()}')
    for name, seconds in times.items():
        print(f'{name:32s} {seconds * 1e3:8.1f} ms')
    ratio = times['splitbrain_hub.colorize'] / times['scikit-image rgb2lab + lab2rgb']
    print(f'colorize / scikit-image colour conversion: {ratio:.2f}x (goal <= 0.4x: {"met" if ratio <= 0.4 else "missed"})')
    fp32 = times['colorize, amp=off (fp32)'] / times['scikit-image rgb2lab + lab2rgb']
    print(f'colorize amp=off / scikit-image colour conversion: {fp32:.2f}x')


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    main()
