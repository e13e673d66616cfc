"""fp32 vs bf16 training, same recipe and seed: loss curves side by side, and the final-window losses.

    python -m scripts.plot_amp_curves [--runs ~/.cache/splitbrain_hub/runs] [--out docs/amp_curves.png]

Reads ``metrics.jsonl`` of the runs ``amp_off`` and ``amp_bf16`` (launched as in MODEL_CARD.md: the
release recipe with ``--amp=off`` / ``--amp=bf16``, ``--seed=0``, 150 steps). The final window is the mean
of the last 50 steps (five logged 10-step windows); the goal is bf16 within 2 % of fp32 for every term.
"""
import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from training.config import RUNS_DIR

RUNS = {'fp32 (--amp=off)': 'amp_off', 'bf16 (--amp=bf16)': 'amp_bf16'}
FINAL_WINDOWS = 5  # 5 logged windows of 10 steps: the last 50 steps


def read(run: Path):
    return [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=Path, default=RUNS_DIR)
    parser.add_argument('--out', type=Path, default=Path('docs/amp_curves.png'))
    args = parser.parse_args()
    rows = {label: read(args.runs / name) for label, name in RUNS.items()}
    terms = ['loss'] + sorted(rows[next(iter(rows))][-1]['losses'])
    figure, axes = plt.subplots(1, len(terms), figsize=(4.2 * len(terms), 3.4), constrained_layout=True)
    final = {}
    for label, metrics in rows.items():
        steps = [r['step'] for r in metrics]
        for axis, term in zip(axes, terms):
            values = [r['loss'] if term == 'loss' else r['losses'][term] for r in metrics]
            axis.plot(steps, values, label=label)
            axis.set_title('total loss' if term == 'loss' else term)
            axis.set_xlabel('step (batch 64)')
            final[label, term] = statistics.mean(values[-FINAL_WINDOWS:])
        speed = statistics.median(r['img_per_s'] for r in metrics)
        print(f'{label}: {metrics[-1]["step"]} steps, median {speed:.1f} img/s, '
              f'train seconds {metrics[-1]["train_seconds"]:.0f}')
    axes[0].legend()
    figure.suptitle('Split-brain (cl,cl), release recipe, seed 0: fp32 vs bf16 autocast on CPU')
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    fp32, bf16 = RUNS
    for term in terms:
        a, b = final[fp32, term], final[bf16, term]
        print(f'final-window {term}: fp32 {a:.4f}, bf16 {b:.4f}, difference {100 * (b - a) / a:+.2f} %')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
