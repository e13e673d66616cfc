"""Write docs/upsampling.png: bilinear vs guided upsampling of the ab grid on a few Kodak crops.

    python scripts/upsampling_figure.py [--weights PATH] [--kodak ../shared/datasets/kodak] [--out docs/upsampling.png]

Each photo is colorized whole, at full resolution, once per upsampler (``colorize(upsample=...)``); the figure
shows a crop of each result, the same crop's colour alone (the result's ab at a constant L = 65, where
bleeding across edges is easiest to see), and the truth. Kodak photos are a research test set that is widely
redistributed; the crops are kept small.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from splitbrain_hub import colorize
from splitbrain_hub.inference import load_model
from splitbrain_hub.ops.color import lab_to_rgb, rgb_to_lab

REPO = Path(__file__).resolve().parents[1]
# (photo, left, top): crops where objects meet sky or water (a horizon with trees and a mast, a lighthouse's
# lantern, the top of a spinnaker).
CROPS = (('kodim06.png', 150, 40), ('kodim19.png', 240, 140), ('kodim09.png', 290, 170))
CROP = 176
CONSTANT_L = 65.0
COLUMNS = ('bilinear', 'guided', 'bilinear: colour alone', 'guided: colour alone', 'truth')


def colour_alone(rgb: np.ndarray) -> np.ndarray:
    """The image's ab at a constant lightness: only where colour changes is visible."""
    lab = rgb_to_lab(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255)
    lab[:, 0] = CONSTANT_L
    return (lab_to_rgb(lab, clip=True)[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', help='save_pretrained folder or .safetensors (default: the pretrained model)')
    parser.add_argument('--kodak', type=Path, default=REPO.parent / 'shared' / 'datasets' / 'kodak')
    parser.add_argument('--out', type=Path, default=REPO / 'docs' / 'upsampling.png')
    args = parser.parse_args()
    model = load_model(args.weights, 'cpu')
    label_height, gap = 18, 4
    width = len(COLUMNS) * CROP + (len(COLUMNS) - 1) * gap
    sheet = Image.new('RGB', (width, label_height + len(CROPS) * (CROP + gap)), 'white')
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(COLUMNS):
        draw.text((column * (CROP + gap) + 2, 3), title, fill='black')
    for row, (name, left, top) in enumerate(CROPS):
        photo = np.asarray(Image.open(args.kodak / name).convert('RGB'))
        bilinear, guided = (np.asarray(colorize(photo, model=model, upsample=u)) for u in ('bilinear', 'guided'))
        panels = (bilinear, guided, colour_alone(bilinear), colour_alone(guided), photo)
        for column, panel in enumerate(panels):
            crop = Image.fromarray(panel[top:top + CROP, left:left + CROP])
            sheet.paste(crop, (column * (CROP + gap), label_height + row * (CROP + gap)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f'wrote {args.out} ({sheet.size[0]}x{sheet.size[1]})')


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    main()
