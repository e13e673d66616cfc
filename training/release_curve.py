"""The release run's colour quality against images seen: snapshots of its checkpoint, each measured as the release.

    python -m training.release_curve snapshot   # the run's checkpoint now -> <run>/curve/step_<n> (while it trains)
    python -m training.release_curve evaluate   # every snapshot not yet measured -> results/release_curve.{json,md}
                                                #   and docs/release_curve.png

Each point is the Kodak photos at ``colorize``'s defaults (the numbers of the release goal) and 2,000 Tiny
ImageNet val photos at the default temperature, with the grey baseline beside them. Images seen count the
96,000 of the weights the run continues from; the first point is those weights themselves, measured while they
are still the shipped file. The curve only reports: the release is the run's last step whatever the curve
shows, a rule fixed before the run (Kodak is a held-out test set, not a model selector).
"""
import json
import sys
from pathlib import Path

from splitbrain_hub import exits
from splitbrain_hub.files import atomic_write_bytes
from splitbrain_hub.hub import CONFIG_NAME, sha256_of, shipped_weights_path
from splitbrain_hub.inference import DEFAULT_TEMPERATURE
from training.evaluate import (
    DATASET,
    colorization,
    full_resolution_colorization,
    load_frozen_model,
    write_json,
)
from training.export import export
from training.release import RECIPE, RUN, START_IMAGES, START_WEIGHTS_SHA256, current_run, first_step
from training.train import CHECKPOINT, load_checkpoint

REPO = Path(__file__).resolve().parents[1]

KODAK = DATASET.parent / 'kodak'
CURVE = RUN / 'curve'
RESULTS = REPO / 'results' / 'release_curve.json'
FIGURE = REPO / 'docs' / 'release_curve.png'
STYLES = (('kodak', '-o', 'tab:blue'), ('val', '-s', 'tab:green'))  # (data, marker, colour): ours solid, grey dotted
GOAL = dict(auc_rebalanced_over_grey=0.06, auc_over_grey=-0.01, chroma_tolerance=0.2)  # issue 12, Kodak


def snapshot() -> Path:
    """Export the running checkpoint to ``curve/step_<n>`` (n counts the whole chain of runs)."""
    out_dir, _, _ = current_run()
    step = first_step(out_dir) + load_checkpoint(out_dir / CHECKPOINT)['step']
    folder = CURVE / f'step_{step}'
    if not (folder / CONFIG_NAME).is_file():
        export(out_dir, folder)
    print(f'snapshot: {folder}')
    return folder


def points() -> list[tuple[int, str]]:
    """(step, weights) of every point: the start weights while they are shipped, then each snapshot."""
    found = sorted((int(p.name.removeprefix('step_')), str(p)) for p in CURVE.glob('step_*')
                   if (p / CONFIG_NAME).is_file())
    start = shipped_weights_path('splitbrain_alexnet', 'tinyimagenet_128')
    return ([(0, str(start))] if sha256_of(start) == START_WEIGHTS_SHA256 else []) + found


def measure(step: int, weights: str) -> dict:
    """One point: Kodak at colorize's defaults and the val photos at the default temperature, grey beside."""
    loaded = load_frozen_model(weights, f'step_{step}')
    kodak = full_resolution_colorization([loaded], KODAK, ['guided'])
    val = colorization([loaded], DATASET, val_per_class=10)

    def pick(rows: list[dict], model: str) -> dict:
        row = next(r for r in rows if r['model'] == model and r['temperature'] in (None, DEFAULT_TEMPERATURE))
        return {k: row[k] for k in ('auc', 'auc_rebalanced', 'psnr_db', 'chroma_pred', 'chroma_true')}

    return dict(step=step, images_seen=START_IMAGES + RECIPE['batch_size'] * step, weights_sha256=loaded.sha256,
                temperature=DEFAULT_TEMPERATURE, kodak=pick(kodak, loaded.name), kodak_grey=pick(kodak, 'grey'),
                val=pick(val, loaded.name), val_grey=pick(val, 'grey'), val_images=val[0]['val_images'])


def goal_gaps(point: dict) -> dict:
    """How far a point is from each Kodak goal (>= 0: met)."""
    kodak, grey = point['kodak'], point['kodak_grey']
    chroma_error = abs(kodak['chroma_pred'] / kodak['chroma_true'] - 1)
    return dict(auc_rebalanced=kodak['auc_rebalanced'] - grey['auc_rebalanced'] - GOAL['auc_rebalanced_over_grey'],
                auc=kodak['auc'] - grey['auc'] - GOAL['auc_over_grey'],
                chroma=GOAL['chroma_tolerance'] - chroma_error)


def markdown(curve: list[dict]) -> str:
    lines = ['# The release run: colour quality against images seen', '',
             f"`python -m training.release_curve evaluate`. Kodak: the 24 photos at `colorize`'s defaults "
             f'(T = {DEFAULT_TEMPERATURE}, guided upsampling); val: {curve[0]["val_images"]} Tiny ImageNet val '
             'photos at the same T, bilinear. Goal (Kodak): rebalanced AuC >= grey + 0.06, AuC >= grey - 0.01, '
             'chroma within 20 % of the truth. "gap" columns: distance to each goal, >= 0 when met.', '',
             '| images seen | Kodak AuC (grey) | Kodak rebal. AuC (grey) | Kodak chroma / true | gap AuC | '
             'gap rebal. | gap chroma | val AuC (grey) | val rebal. AuC (grey) | val chroma / true |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for p in curve:
        k, kg, v, vg, gap = p['kodak'], p['kodak_grey'], p['val'], p['val_grey'], goal_gaps(p)
        lines.append(
            f"| {p['images_seen']:,} | {k['auc']:.4f} ({kg['auc']:.4f}) | {k['auc_rebalanced']:.4f} "
            f"({kg['auc_rebalanced']:.4f}) | {k['chroma_pred']:.2f} / {k['chroma_true']:.2f} | {gap['auc']:+.4f} | "
            f"{gap['auc_rebalanced']:+.4f} | {gap['chroma']:+.3f} | {v['auc']:.4f} ({vg['auc']:.4f}) | "
            f"{v['auc_rebalanced']:.4f} ({vg['auc_rebalanced']:.4f}) | {v['chroma_pred']:.2f} / {v['chroma_true']:.2f} |")
    return '\n'.join(lines) + '\n'


def plot(curve: list[dict], path: Path) -> None:
    images = [p['images_seen'] for p in curve]
    import matplotlib
    matplotlib.use('Agg')  # a file, no display
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    for axis, key, title in ((axes[0], 'auc_rebalanced', 'rebalanced AuC'), (axes[1], 'auc', 'AuC')):
        for data, style, colour in STYLES:
            axis.plot(images, [p[data][key] for p in curve], style, color=colour, label=f'{data}, ours')
            axis.plot(images, [p[f'{data}_grey'][key] for p in curve], ':', color=colour, label=f'{data}, grey')
        axis.set_title(title)
    axes[0].plot(images, [p['kodak_grey']['auc_rebalanced'] + GOAL['auc_rebalanced_over_grey'] for p in curve], '--k',
                 label='Kodak goal')
    axes[1].plot(images, [p['kodak_grey']['auc'] + GOAL['auc_over_grey'] for p in curve], '--k', label='Kodak goal')
    for data, style, colour in STYLES:
        axes[2].plot(images, [p[data]['chroma_pred'] / p[data]['chroma_true'] for p in curve], style, color=colour,
                     label=data)
    axes[2].axhspan(1 - GOAL['chroma_tolerance'], 1 + GOAL['chroma_tolerance'], alpha=0.15, label='goal band')
    axes[2].set_title('chroma predicted / true')
    for axis in axes:
        axis.set_xlabel('images seen (thousands)')
        axis.xaxis.set_major_formatter(lambda value, _: f'{value / 1000:.0f}')
        axis.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def evaluate() -> list[dict]:
    curve = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    done = {p['step'] for p in curve}
    for step, weights in points():
        if step not in done:
            curve.append(measure(step, weights))
            curve.sort(key=lambda p: p['step'])
            write_json(curve, RESULTS)  # after every point: a stop loses at most the one being measured
    atomic_write_bytes(RESULTS.with_suffix('.md'), markdown(curve).encode())
    plot(curve, FIGURE)
    for p in curve:
        print(p['images_seen'], {k: round(v, 4) for k, v in goal_gaps(p).items()})
    return curve


if __name__ == '__main__':
    commands = {'snapshot': snapshot, 'evaluate': evaluate}
    if sys.argv[1:] not in [[name] for name in commands]:
        raise SystemExit(f'usage: python -m training.release_curve {{{"|".join(commands)}}}, got {sys.argv[1:]}')
    sys.exit(exits.run(commands[sys.argv[1]]))
