"""The 227-px release: split-brain (cl,cl) learning colour from real photos, one command per stage.

    python -m training.photo_sources --mirrors=DIR   # first: the photo shards (training/photo_sources.py)
    python -m training.release_227 ab                # the A/B: continue the 576,000-image weights vs from scratch
    python -m training.release_227 ab-evaluate       # both arms' snapshots on the validation photos -> results/
    python -m training.release_227 run               # the release run: starts, resumes (same command), exports
    python -m training.release_227 curve             # every snapshot of the run on val photos and Kodak -> results/

Data: the training split of the photo shards only (Tiny ImageNet's share is 0: its 64-px thumbnails are what this
release moves away from). Input 227 px (the paper's and timm's size; the conv5 grid is 13x13), random-resized
crops of at least ``crop_scale_min`` of a photo stored at short side 256, so the network sees photos at about the
scale ``colorize`` shows them (short side 227). Class rebalancing with an ab prior estimated from 4,096 of these
photos at this size. The rest is the 128-px release's recipe under bf16.

The A/B gives both arms the same budget (``AB_STEPS`` steps, snapshots every ``AB_SNAPSHOT``), then reads their
colour on the validation photos (``ab-evaluate``); the arm chosen there is written into ``RELEASE_INIT`` before
the run starts. The release is the run's last step, fixed before it starts. Runs live under
``$SPLITBRAIN_HUB_RUNS`` (default ``~/.cache/splitbrain_hub/runs``); each resumes from its checkpoint with the same
command, or, if the checkpoint is lost, from its newest snapshot with the steps it had left. The evaluations read
Kodak and Tiny ImageNet under ``$SPLITBRAIN_HUB_DATASETS`` (e.g. ``export SPLITBRAIN_HUB_DATASETS=../shared/datasets``).
"""
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from splitbrain_hub import exits
from splitbrain_hub.hub import shipped_weights_path
from training.config import DATASETS, RUNS_DIR
from training.photo_sources import DATA, SHARDS
from training.train import CHECKPOINT

REPO = Path(__file__).resolve().parents[1]
KODAK = DATASETS / 'kodak'  # reported, never chosen on
TINY_IMAGENET = DATASETS / 'tiny-imagenet'  # its train split's mean ab is a baseline
RUNS = RUNS_DIR / 'release_227'
VAL_PHOTOS = DATA / 'photos_val'
RECIPE = dict(objective='split_brain_cl', data=f'{SHARDS}/train-*.tar', input_size=227, crop_scale_min=0.4,
              batch_size=64, lr=2e-4, warmup_steps=50, min_lr_ratio=0.1, seed=2, rebalance=True,
              rebalance_lambda=0.5, checkpoint_every=50, progress=False)
PRIOR = dict(prior_images=4096, seed=0)
START_WEIGHTS = shipped_weights_path('splitbrain_alexnet', 'tinyimagenet_128')  # the 576,000-image release
START_WEIGHTS_SHA256 = 'aae657c63646e0576c333148665cef7b94bdf41a4d19e15a3e9c0f3df827bf19'
ARMS = {'continue': START_WEIGHTS, 'scratch': None}
AB_STEPS, AB_SNAPSHOT = 200, 100
RELEASE_STEPS, RELEASE_SNAPSHOT = 4_700, 500  # 300,800 images
RELEASE_INIT = 'continue'  # the A/B's choice (results/release_227_ab.json)


def python(*args: str) -> None:
    print('$', ' '.join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=REPO, check=True)


def ab_prior() -> Path:
    path = RUNS / 'ab_prior_4096_227.json'
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        python('-m', 'training.ab_prior', f'--data={RECIPE["data"]}', f'--input_size={RECIPE["input_size"]}',
               f'--crop_scale_min={RECIPE["crop_scale_min"]}', f'--prior_images={PRIOR["prior_images"]}',
               f'--seed={PRIOR["seed"]}', f'--out={path}')
    return path


def first_step(folder: Path) -> int:
    """Steps done before ``folder``'s run began: 0 for a run, N for its continuation ``from_step_N``."""
    return int(folder.name.removeprefix('from_step_')) if folder.name.startswith('from_step_') else 0


def snapshots(run: Path) -> list[Path]:
    """The run's snapshots (its own and its continuations'), named by the step of the whole run, oldest first."""
    found = {first_step(f) + int(s.name.removeprefix('step_')): s
             for f in [run, *run.glob('from_step_*')] for s in (f / 'snapshots').glob('step_*')}
    return [found[step] for step in sorted(found)]


def train(run: Path, steps: int, snapshot_every: int, init: Path | None) -> None:
    """Start, resume from the newest checkpoint, or, with every checkpoint lost, continue from the newest
    snapshot with a fresh optimizer in ``from_step_N`` (the steps it had left); never from zero twice."""
    chain = sorted([run, *run.glob('from_step_*')], key=first_step)
    resumable = [f for f in chain if (f / CHECKPOINT).is_file()]
    out_dir, flags = run, []
    if resumable:
        out_dir, flags = resumable[-1], ['--resume']
    elif snapshots(run):
        newest = snapshots(run)[-1]
        done = first_step(newest.parents[1]) + int(newest.name.removeprefix('step_'))
        out_dir, flags = run / f'from_step_{done}', [f'--init_weights={newest}']
    elif init is not None:
        flags = [f'--init_weights={init}']
    flags += [f'--{key}={value}' for key, value in RECIPE.items()]
    flags += [f'--out_dir={out_dir}', f'--max_steps={steps - first_step(out_dir)}',
              f'--snapshot_every={snapshot_every}', f'--ab_prior={ab_prior()}']
    python('-m', 'training.train', *flags)


def val_photos() -> Path:
    """The validation split's photos as files (``colorize`` and the evaluation read a folder)."""
    done = VAL_PHOTOS / '.complete'
    if not done.is_file():
        VAL_PHOTOS.mkdir(parents=True, exist_ok=True)
        for shard in sorted(SHARDS.glob('val-*.tar')):
            with tarfile.open(shard) as tar:
                members = [m for m in tar.getmembers() if m.name.endswith('.jpg')]
                tar.extractall(VAL_PHOTOS, members=members, filter='data')
        done.touch()
    return VAL_PHOTOS


def evaluate(weights: dict[str, Path], folder: Path, out: Path) -> None:
    """Colour of each weights folder on ``folder`` at colorize's defaults (guided upsampling), every temperature."""
    python('-m', 'training.evaluate', 'colorization', *[f'--weights={name}={path}' for name, path in weights.items()],
           f'--data={folder}', f'--train-data={TINY_IMAGENET}', '--upsample', 'guided', f'--out={out}')


def main(argv: list[str]) -> None:
    stage = argv[0] if len(argv) == 1 else ''
    if stage == 'ab':
        for arm, init in ARMS.items():
            train(RUNS / f'ab_{arm}', AB_STEPS, AB_SNAPSHOT, init)
    elif stage == 'ab-evaluate':
        weights = {'release_576k': START_WEIGHTS,
                   **{f'{arm}@{s.name}': s for arm in ARMS for s in snapshots(RUNS / f'ab_{arm}')}}
        evaluate(weights, val_photos(), REPO / 'results' / 'release_227_ab_val.json')
    elif stage == 'run':
        train(RUNS / 'release', RELEASE_STEPS, RELEASE_SNAPSHOT, ARMS[RELEASE_INIT])
        python('-m', 'training.export', f'--out_dir={RUNS / "release"}', f'--export_dir={RUNS / "release" / "export"}')
    elif stage == 'curve':
        weights = {f'step_{first_step(s.parents[1]) + int(s.name[5:]):06d}': s for s in snapshots(RUNS / 'release')}
        evaluate(weights, val_photos(), REPO / 'results' / 'release_227_curve_val.json')
        evaluate(weights, KODAK, REPO / 'results' / 'release_227_curve_kodak.json')
    else:
        raise SystemExit(f'usage: python -m training.release_227 ab|ab-evaluate|run|curve, got {argv}')
    print(json.dumps({'stage': stage, 'done': True}))


if __name__ == '__main__':
    sys.exit(exits.run(lambda: main(sys.argv[1:])))
