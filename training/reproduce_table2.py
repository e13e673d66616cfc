"""Table 2 of the paper on Tiny ImageNet, with one command: train what is missing, probe everything, write the table.

    python -m training.reproduce_table2                         # every row, its seeds, the default budget
    python -m training.reproduce_table2 --seeds 0 1 --rows split_brain_cl gaussian
    python -m training.reproduce_table2 --no-train              # probe only the runs that exist
    python -m training.reproduce_table2 --budget-images 2000000 --train-arg device=cuda

Each row is trained by ``training/train.py`` (``--objective=<row>``) for the same number of images seen
(``--budget-images``, rounded up to whole batches), on the same train shards, at the same input size, into
``~/.cache/splitbrain_hub/runs/table2/<row>_b<budget>_s<seed>/`` (outside the checkout: see ``config.RUNS_DIR``);
a killed run is resumed, a finished one (its ``export/`` says it
reached the last step) is skipped. The "Gaussian" row is the untrained network at its seed's initialisation.
Every model is probed with ``evaluate.linear_probe`` (same protocol for all rows: never tuned per row);
results already in the JSON for the same weights and protocol are kept, not recomputed.

Outputs: ``results/table2_tiny_imagenet.json`` (every probe record) and ``results/table2_tiny_imagenet.md``.
"""
import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from splitbrain_hub import exits
from splitbrain_hub.files import atomic_write_bytes
from splitbrain_hub.hub import CONFIG_NAME, weights_file
from splitbrain_hub.ops.precision import AMP_SETTINGS
from training.config import RUNS_DIR
from training.evaluate import (
    CACHE,
    DATASET,
    LAYERS,
    PROBE_GRIDS,
    ProbeConfig,
    linear_probe,
    load_frozen_model,
    write_json,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / 'results'
RUNS = RUNS_DIR / 'table2'
# One budget for every trained row: 300 steps of 64 at 128 px, chosen so that the 12 trained runs (13 with
# the second (cl,cl) seed) take about two hours with the bf16 trainer on this project's 2-core CPU.
DEFAULT_BUDGET_IMAGES = 19_200
DEFAULT_BATCH = 64


@dataclass(frozen=True)
class Row:
    key: str              # the trainer's objective name ('gaussian': no training)
    label: str            # as the paper's Table 2 writes it
    paper: tuple[float, ...]  # the paper's top-1 (%) conv1..conv5, ImageNet, Table 2
    weights: str = ''     # a fixed weights file (relative to the repo) instead of a training run
    seeds: tuple[int, ...] = (0,)  # training (and Gaussian init) seeds; two where the table shows a spread
    images: int | None = None   # images seen by fixed weights, from their model card (no config.json beside them)


# The paper's Table 2 (ImageNet, 1000 classes), in its order; the supervised row is "ImageNet-labels".
ROWS: tuple[Row, ...] = (
    Row('supervised', 'ImageNet-labels (here: Tiny ImageNet labels)', (19.3, 36.3, 44.2, 48.3, 50.5)),
    Row('gaussian', 'Gaussian', (11.6, 17.1, 16.9, 16.3, 14.1), seeds=(0, 1)),
    Row('lab_to_lab', 'Lab→Lab', (12.9, 20.1, 18.5, 15.1, 11.5)),
    Row('lab_drop50_to_lab', 'Lab(drop50)→Lab', (12.1, 20.4, 19.7, 16.1, 12.3)),
    Row('l_to_ab_cl', 'L→ab (cl)', (12.5, 25.4, 32.4, 33.1, 32.0)),
    Row('l_to_ab_reg', 'L→ab (reg)', (12.3, 23.5, 29.6, 31.1, 30.1)),
    Row('ab_to_l_cl', 'ab→L (cl)', (11.6, 19.2, 22.6, 21.7, 19.2)),
    Row('ab_to_l_reg', 'ab→L (reg)', (11.5, 19.4, 23.5, 23.9, 21.7)),
    Row('l_ab_to_ab_l', '(L,ab)→(ab,L)', (15.1, 22.6, 24.4, 23.2, 21.1)),
    Row('l_ab_lab_to_ab_l_lab', '(L,ab,Lab)→(ab,L,Lab)', (15.4, 22.9, 24.0, 22.0, 18.9)),
    Row('ensembled_l_to_ab', 'Ensembled L→ab', (11.7, 23.7, 30.9, 32.2, 31.3)),
    Row('split_brain_reg', 'Split-Brain Auto (reg,reg)', (17.4, 27.9, 33.6, 34.2, 32.3)),
    Row('split_brain_cl', 'Split-Brain Auto (cl,cl)', (17.7, 29.3, 35.4, 35.2, 32.8), seeds=(0, 1)),
    # The weights shipped in the package (their own run and budget: see MODEL_CARD.md), probed the same way.
    Row('release', 'Split-Brain Auto (cl,cl), released weights', (17.7, 29.3, 35.4, 35.2, 32.8),
        weights='splitbrain_hub/weights/splitbrain_alexnet.tinyimagenet_128.safetensors', images=576_000),
)
ROW_BY_KEY = {row.key: row for row in ROWS}


def run_dir(row: str, budget_images: int, seed: int) -> Path:
    return RUNS / f'{row}_b{budget_images}_s{seed}'


def finished(out_dir: Path, max_steps: int) -> bool:
    """True when the run's export exists and was taken at its last step."""
    config = out_dir / 'export' / 'config.json'
    if not config.is_file():
        return False
    return json.loads(config.read_text()).get('training', {}).get('step') == max_steps


def train(row: str, budget_images: int, seed: int, batch_size: int, extra: Sequence[str]) -> Path:
    """Train (or resume) one row with the trainer and export it; returns the exported folder."""
    out_dir = run_dir(row, budget_images, seed)
    max_steps = math.ceil(budget_images / batch_size)
    if not finished(out_dir, max_steps):
        command = [sys.executable, '-m', 'training.train', f'--objective={row}', f'--out_dir={out_dir}',
                   f'--max_steps={max_steps}', f'--batch_size={batch_size}', f'--seed={seed}',
                   *(f'--{arg}' for arg in extra)]
        if (out_dir / 'ckpt.pt').is_file():
            command.append('--resume')
        print('$', ' '.join(command), flush=True)
        subprocess.run(command, cwd=REPO, check=True)
        subprocess.run([sys.executable, '-m', 'training.export', f'--out_dir={out_dir}',
                        f'--export_dir={out_dir / "export"}'], cwd=REPO, check=True)
    return out_dir / 'export'


def images_seen(weights: str) -> int | None:
    """Training images the weights saw, from the config.json the trainer's export writes (0 untrained)."""
    if weights == 'gaussian':
        return 0
    config = weights_file(weights).parent / CONFIG_NAME
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get('training', {}).get('images_seen')


def train_seconds(weights: str) -> float | None:
    """The trainer's own count of training seconds (all resumes together), from the export's config.json."""
    config = weights_file(weights).parent / CONFIG_NAME
    seconds = json.loads(config.read_text()).get('training', {}).get('train_seconds') if config.is_file() else None
    return None if seconds is None else round(seconds, 1)


def protocol(args: argparse.Namespace) -> dict:
    """Everything the probe numbers depend on besides the weights: a stored result is reused only if equal."""
    return dict(train_per_class=args.train_per_class, val_per_class=args.val_per_class, input_size=args.input_size,
                grids=PROBE_GRIDS, probe=ProbeConfig(epochs=args.epochs).__dict__, features_amp=args.amp)


def load_previous(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def markdown(table: dict) -> str:
    """The table: our top-1 per layer (mean ± half the range over seeds) next to the paper's."""
    by_row: dict[str, dict[str, list[float]]] = {}
    seeds: dict[str, list[int]] = {}
    seen: dict[str, set] = {}
    for record in table['results']:
        images = record.get('images_seen')
        seen.setdefault(record['row'], set()).add(ROW_BY_KEY[record['row']].images if images is None else images)
        by_row.setdefault(record['row'], {}).setdefault(record['layer'], []).append(100 * record['top1'])
        seeds.setdefault(record['row'], [])
        if record['seed'] not in seeds[record['row']]:
            seeds[record['row']].append(record['seed'])
    p = table['protocol']
    lines = [
        '# Table 2 on Tiny ImageNet: linear probes on frozen conv1..conv5',
        '',
        f"Top-1 (%) on the val split (200 classes, {table['val_count']} images) of multinomial logistic regression "
        f"trained on {table['train_count']} train images ({p['train_per_class'] or 'all'} per class); features resized to "
        'conv1 96×10×10 = 9600, conv2 256×6×6 = 9216, conv3/conv4 384×5×5 = 9600, conv5 256×6×6 = 9216; '
        f"input {p['input_size']}×{p['input_size']} (64×64 photos upsampled). "
        'Paper: ImageNet, 1000 classes, 1.3M images, full training (Table 2). '
        'With several seeds: mean ± half the range.',
        '',
        '| Row | images seen | seeds | conv1 | conv2 | conv3 | conv4 | conv5 | paper conv1–conv5 |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for row in ROWS:
        layers = by_row.get(row.key)
        paper = ' / '.join(f'{v:.1f}' for v in row.paper)
        if layers is None:
            reason = table.get('missing', {}).get(row.key, 'not run')
            lines.append(f'| {row.label} | – | – | ' + ' | '.join('–' for _ in LAYERS) + f' | {paper} |')
            lines.append(f'|   ↳ missing: {reason} | | | | | | | | |')
            continue
        cells = []
        for layer in LAYERS:
            values = layers.get(layer, [])
            if not values:
                cells.append('–')
            elif len(values) == 1:
                cells.append(f'{values[0]:.1f}')
            else:
                cells.append(f'{statistics.mean(values):.1f} ± {(max(values) - min(values)) / 2:.1f}')
        images = ', '.join('?' if n is None else f'{n:,}' for n in sorted(seen[row.key], key=lambda n: n or 0))
        lines.append(f"| {row.label} | {images} | {','.join(map(str, sorted(seeds[row.key])))} | " + ' | '.join(cells)
                     + f' | {paper} |')
    return '\n'.join(lines) + '\n'


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rows', nargs='+', default=[row.key for row in ROWS], choices=list(ROW_BY_KEY))
    parser.add_argument('--seeds', nargs='+', type=int, default=None,
                        help="training (and Gaussian init) seeds for every row given (default: each row's own)")
    parser.add_argument('--budget-images', type=int, default=DEFAULT_BUDGET_IMAGES,
                        help=f'images seen by every trained row (default {DEFAULT_BUDGET_IMAGES:,})')
    parser.add_argument('--batch-size', type=int, default=DEFAULT_BATCH)
    parser.add_argument('--train-arg', action='append', default=[], metavar='KEY=VALUE',
                        help='extra trainer flag for every row, e.g. device=cuda (repeatable)')
    parser.add_argument('--no-train', action='store_true', help='probe only the runs that already exist')
    parser.add_argument('--release-weights', type=Path, default=REPO / ROW_BY_KEY['release'].weights,
                        help='weights file of the "release" row (default: the file shipped in the package)')
    parser.add_argument('--data', type=Path, default=DATASET)
    parser.add_argument('--train-per-class', type=int, default=None,
                        help='probe train images per class (default: all 160 = 32,000, as the paper fits on all)')
    parser.add_argument('--val-per-class', type=int, default=None)
    parser.add_argument('--amp', choices=AMP_SETTINGS, default='auto', help='feature extraction precision')
    parser.add_argument('--input-size', type=int, default=128)
    parser.add_argument('--epochs', type=int, default=ProbeConfig.epochs)
    parser.add_argument('--out', type=Path, default=RESULTS / 'table2_tiny_imagenet.json')
    args = parser.parse_args(argv)

    previous = load_previous(args.out)
    same_setup = previous.get('protocol') == protocol(args)
    kept = previous.get('results', []) if same_setup else []
    seeds = {key: args.seeds or ROW_BY_KEY[key].seeds for key in args.rows}
    results: list[dict] = [r for r in kept if r['row'] not in seeds or r['seed'] not in seeds[r['row']]]
    missing: dict[str, str] = dict(previous.get('missing', {})) if same_setup else {}
    timings: dict[str, float] = dict(previous.get('seconds', {})) if same_setup else {}
    for key in args.rows:
        missing.pop(key, None)
        for seed in seeds[key]:
            start = time.perf_counter()
            row = ROW_BY_KEY[key]
            if key == 'gaussian':
                weights = 'gaussian'
            elif row.weights:
                if not args.release_weights.is_file():
                    missing[key] = f'no weights file at {args.release_weights}'
                    continue
                weights = str(args.release_weights)
            else:
                out_dir = run_dir(key, args.budget_images, seed)
                if args.no_train and not finished(out_dir, math.ceil(args.budget_images / args.batch_size)):
                    missing[key] = f'not trained (no finished run at {out_dir})'
                    continue
                trained_now = not finished(out_dir, math.ceil(args.budget_images / args.batch_size))
                weights = str(train(key, args.budget_images, seed, args.batch_size, args.train_arg))
                if trained_now:  # wall time of this invocation's training (a resumed run: its remainder only)
                    timings[f'{key}_s{seed}_train'] = round(time.perf_counter() - start, 1)
                timings[f'{key}_s{seed}_train_seconds_in_run'] = train_seconds(weights)
            loaded = load_frozen_model(weights, name=f'{key}_s{seed}', seed=seed)
            old = [r for r in kept if r['row'] == key and r['seed'] == seed and r['weights_sha256'] == loaded.sha256]
            if len(old) == len(LAYERS):
                results.extend(old)
                continue
            start = time.perf_counter()
            records = linear_probe(loaded, args.data, args.train_per_class, args.val_per_class, args.input_size,
                                   LAYERS, ProbeConfig(epochs=args.epochs), CACHE, args.amp)
            timings[f'{key}_s{seed}_probe'] = round(time.perf_counter() - start, 1)
            results.extend(dict(row=key, seed=seed, images_seen=images_seen(weights), **r) for r in records)
            print(f'{key} seed {seed}: ' + '  '.join(f"{r['layer']} {100 * r['top1']:.1f}" for r in records),
                  flush=True)
            table = dict(protocol=protocol(args), results=results,
                         missing=missing, seconds=timings, train_count=records[0]['train_count'],
                         val_count=records[0]['val_count'])
            write_json(table, args.out)  # after every model: a killed run keeps what it measured
            atomic_write_bytes(args.out.with_suffix('.md'), markdown(table).encode())
    if not results:
        print('nothing probed', file=sys.stderr)
        return 1
    table = dict(protocol=protocol(args), results=results, missing=missing,
                 seconds=timings, train_count=results[0]['train_count'], val_count=results[0]['val_count'])
    write_json(table, args.out)
    atomic_write_bytes(args.out.with_suffix('.md'), markdown(table).encode())
    print(markdown(table))
    return 0


if __name__ == '__main__':
    sys.exit(exits.run(main))
