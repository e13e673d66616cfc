"""colorize on a 1024x768 photo vs what a scikit-image pipeline pays for colour conversion alone.

    python benchmarks/bench_colorize.py [--weights PATH] [--rounds 7]

The baseline is ``skimage.color.rgb2lab`` + ``lab2rgb`` on the same image. Goal (issue 11): the whole
``colorize`` call at its defaults (uint8 array in, uint8 array out; the network in bf16 where the CPU has it
natively) takes <= 0.4x that time; the fp32 call (``amp='off'``) is timed beside it. Goal (issue 12): the
ab upsampler alone (the guided filter, on the network's 6x6 ab grid and the photo's full-resolution L) costs
<= 20 % of the whole ``colorize`` call with it; bilinear upsampling and ``colorize(upsample='bilinear')``
are timed beside them. Timing does not depend on the weights' values; without shipped weights a randomly
initialised model of the release's configuration (input 128x128) is used, and the script says so.
"""
import argparse

import numpy as np
import timm
import torch
from _timing import add_threads_argument, apply_threads, machine, measure
from PIL import Image
from skimage import color as skcolor

from splitbrain_hub import WeightsError, colorize
from splitbrain_hub.hub import DEFAULT_ARCHITECTURE
from splitbrain_hub.images import SAMPLE_PHOTO
from splitbrain_hub.inference import load_model
from splitbrain_hub.ops.color import rgb_to_lab
from splitbrain_hub.ops.upsample import UPSAMPLERS


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
        model, source = timm.create_model(DEFAULT_ARCHITECTURE).eval(), 'random init (no shipped weights yet)'
    photo = np.asarray(Image.open(SAMPLE_PHOTO).convert('RGB').resize((1024, 768), Image.BICUBIC))
    # The upsamplers' own inputs as colorize has them: the L half's ab grid and the full-resolution L.
    lightness = rgb_to_lab(torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float() / 255)[:, :1]
    size = model.pretrained_cfg['input_size'][-2:]
    grid = model.forward_pretext(torch.zeros(1, 3, *size), is_lab=True, halves=['l_half'])['l_half'].shape[-2:]
    ab = torch.randn(1, 2, *grid) * 30
    times = measure({
        'scikit-image rgb2lab + lab2rgb': lambda: skcolor.lab2rgb(skcolor.rgb2lab(photo)),
        'splitbrain_hub.colorize': lambda: colorize(photo, model=model),
        'colorize, amp=off (fp32)': lambda: colorize(photo, model=model, amp='off'),
        'colorize, upsample=guided': lambda: colorize(photo, model=model, upsample='guided'),
        'colorize, upsample=bilinear': lambda: colorize(photo, model=model, upsample='bilinear'),
        'guided filter alone': lambda: UPSAMPLERS['guided'](ab, lightness),
        'bilinear alone': lambda: UPSAMPLERS['bilinear'](ab, lightness),
    }, rounds=args.rounds)
    print(f'# colorize, 1024x768 uint8 photo, network input {size[0]}x{size[1]} (ab grid {grid[0]}x{grid[1]}), '
          f'weights: {source}; {machine()}')
    for name, seconds in times.items():
        print(f'{name:32s} {seconds * 1e3:8.1f} ms')
    ratio = times['splitbrain_hub.colorize'] / times['scikit-image rgb2lab + lab2rgb']
    print(f'colorize / scikit-image colour conversion: {ratio:.2f}x (goal <= 0.4x: {"met" if ratio <= 0.4 else "missed"})')
    fp32 = times['colorize, amp=off (fp32)'] / times['scikit-image rgb2lab + lab2rgb']
    print(f'colorize amp=off / scikit-image colour conversion: {fp32:.2f}x')
    guided = times['guided filter alone'] / times['colorize, upsample=guided']
    print(f'guided filter / colorize(upsample=guided): {100 * guided:.1f} % (goal <= 20 %: '
          f'{"met" if guided <= 0.2 else "missed"})')
    bilinear = times['bilinear alone'] / times['colorize, upsample=bilinear']
    print(f'bilinear / colorize(upsample=bilinear): {100 * bilinear:.1f} %')
    extra = times['colorize, upsample=guided'] / times['colorize, upsample=bilinear']
    print(f'colorize(upsample=guided) / colorize(upsample=bilinear): {extra:.2f}x')


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    main()
