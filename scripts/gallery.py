"""Write the README's gallery: photos the project may ship, as greyscale input / colorized / ground truth.

    python scripts/gallery.py [--weights PATH] [--out docs/gallery.png]

The photos are scikit-image's bundled samples with public-domain or CC0 licences (see their docstrings)
and the package's own sample; each is colorized from its lightness alone at full resolution.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

from splitbrain_hub import colorize
from splitbrain_hub.images import SAMPLE_PHOTO
from splitbrain_hub.inference import load_model

# name -> loader; all public domain (NASA, SpaceX) or CC0.
PHOTOS = {
    'coffee (package sample)': lambda: np.asarray(Image.open(SAMPLE_PHOTO).convert('RGB')),
    'astronaut': data.astronaut,
    'chelsea': data.chelsea,
    'rocket': data.rocket,
}
COLUMNS = ('greyscale input', 'colorized from L alone', 'ground truth')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', help='save_pretrained folder or .safetensors (default: the pretrained model)')
    parser.add_argument('--out', type=Path, default=Path(__file__).resolve().parents[1] / 'docs' / 'gallery.png')
    parser.add_argument('--height', type=int, default=160, help='height of each cell in pixels')
    parser.add_argument('--temperature', type=float, default=0.38)
    args = parser.parse_args()

    model = load_model(args.weights, 'cpu')
    rows = []
    for name, load in PHOTOS.items():
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
