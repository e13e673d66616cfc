"""Write the README's gallery: full-resolution photos as greyscale input / colorized / ground truth.

    python scripts/gallery.py [--weights PATH] [--out docs/gallery.png]
    python scripts/gallery.py --photos samples --out docs/gallery_samples.png

The default photos are six of the Kodak suite (``../shared/datasets/kodak``, a held-out test set, released by
Kodak for unrestricted research use): every fourth one, kodim01, 05, 09, 13, 17 and 21, a rule fixed before
looking at any result so the picture is not a selection of successes. ``--photos samples`` takes
scikit-image's public-domain / CC0 samples and the package's own photo instead. Each photo is colorized from
its lightness alone, at its full resolution, with ``colorize``'s defaults.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

from splitbrain_hub import colorize
from splitbrain_hub.images import SAMPLE_PHOTO
from splitbrain_hub.inference import DEFAULT_TEMPERATURE, load_model

KODAK = Path(__file__).resolve().parents[2] / 'shared' / 'datasets' / 'kodak'


def _kodak(number: int):
    return lambda: np.asarray(Image.open(KODAK / f'kodim{number:02d}.png').convert('RGB'))


# set name -> photo name -> loader.
PHOTOS = {
    'kodak': {f'kodim{n:02d}': _kodak(n) for n in (1, 5, 9, 13, 17, 21)},
    'samples': {  # public domain (NASA, SpaceX) or CC0
        'coffee (package sample)': lambda: np.asarray(Image.open(SAMPLE_PHOTO).convert('RGB')),
        'astronaut': data.astronaut,
        'chelsea': data.chelsea,
        'rocket': data.rocket,
    },
}
COLUMNS = ('greyscale input', 'colorized from L alone', 'ground truth')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', help='save_pretrained folder or .safetensors (default: the pretrained model)')
    parser.add_argument('--out', type=Path, default=Path(__file__).resolve().parents[1] / 'docs' / 'gallery.png')
    parser.add_argument('--height', type=int, default=160, help='height of each cell in pixels')
    parser.add_argument('--temperature', type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument('--photos', choices=sorted(PHOTOS), default='kodak')
    args = parser.parse_args()

    model = load_model(args.weights, 'cpu')
    rows = []
    for name, load in PHOTOS[args.photos].items():
        truth = Image.fromarray(load())
        grey = truth.convert('L')
        colour = colorize(grey, model=model, temperature=args.temperature)
        width = round(truth.width * args.height / truth.height)
        rows.append((name, [im.convert('RGB').resize((width, args.height), Image.LANCZOS) for im in (grey, colour, truth)]))

    label, gap = 18, 4
    column_width = max(cells[0].width for _, cells in rows)
    sheet = Image.new('RGB', (3 * column_width + 2 * gap, label + len(rows) * (args.height + label + gap)), 'white')
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(COLUMNS):
        draw.text((j * (column_width + gap) + 4, 3), title, fill='black')
    for i, (name, cells) in enumerate(rows):
        top = label + i * (args.height + label + gap)
        draw.text((4, top + 3), name, fill='black')
        for j, cell in enumerate(cells):
            sheet.paste(cell, (j * (column_width + gap) + (column_width - cell.width) // 2, top + label))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f'wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB, weights: {args.weights or "pretrained"})')


if __name__ == '__main__':
    main()
