"""The release run: split-brain (cl,cl) on Tiny ImageNet train for 576,000 images in all, with one command that
starts it, resumes it and exports it.

    python -m training.release            # start, or resume where it stopped (runs/release_576k outside the tree)
    python -m training.release --export   # the Hub folder of its last checkpoint, at any time -> <run>/export

The recipe is the 96,000-image release's (MODEL_CARD.md, "The first 96,000 images": batch 64, 128 px, Adam
lr 2e-4 with 50 warm-up steps then cosine to 2e-5, class rebalancing with the 4,096-image ab prior) under bf16,
continued from those weights (in git history since this run's weights replaced them) for 7,500 more steps
(480,000 images): MODEL_CARD.md gives the short scratch-vs-continue comparison that decided it. Seed 1, so the
batches are not the release's own again.

Resuming: from the run's checkpoint, exactly (``training.train --resume``). If the checkpoint is lost, from the
run's last export with the steps it had left and a fresh optimizer, in a sub-folder ``from_step_<n>``;
never from zero.
"""
import json
import subprocess
import sys
from pathlib import Path

from splitbrain_hub import exits
from splitbrain_hub.errors import WeightsError
from splitbrain_hub.hub import CONFIG_NAME, sha256_of, shipped_weights_path
from training.config import RUNS_DIR
from training.train import CHECKPOINT

REPO = Path(__file__).resolve().parents[1]

RUN = RUNS_DIR / 'release_576k'
STEPS = 7_500
RECIPE = dict(objective='split_brain_cl', batch_size=64, lr=2e-4, warmup_steps=50, min_lr_ratio=0.1, seed=1,
              input_size=128, rebalance=True, rebalance_lambda=0.5, checkpoint_every=100, progress=False)
# The 96,000-image release the run continues; since the new weights replaced that file, it lives in git history.
START_WEIGHTS_SHA256 = '0b16dd95c71ef9a74a2ee9216c73d58a406618f559d85a6b5b63ead64e27dfe6'
START_WEIGHTS_GIT = '5086638:splitbrain_hub/weights/splitbrain_alexnet.tinyimagenet_128.safetensors'
START_IMAGES = 96_000  # images those weights had seen
PRIOR = dict(prior_images=4096, seed=0)  # the release's own ab prior (MODEL_CARD.md: 145,116 cells, 196 bins)


def python(*args: str) -> None:
    print('$', ' '.join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=REPO, check=True)


def ab_prior() -> Path:
    path = RUN / 'ab_prior_4096.json'
    if not path.is_file():
        python('-m', 'training.ab_prior', f'--prior_images={PRIOR["prior_images"]}', f'--seed={PRIOR["seed"]}',
               f'--out={path}')
    return path


def current_run() -> tuple[Path, int, Path]:
    """(out_dir, max_steps, init weights) of the run to go on with: the newest folder with a checkpoint, else one
    continuing the newest export, else a new run from the shipped file, which must hold the 96,000-image weights."""
    runs = sorted([RUN, *RUN.glob('from_step_*')], key=first_step)  # the chain of runs, oldest first
    for out_dir in reversed(runs):
        if (out_dir / CHECKPOINT).is_file():
            return out_dir, steps_left(out_dir), Path()
    for out_dir in reversed(runs):
        config = out_dir / 'export' / CONFIG_NAME
        if config.is_file():
            done = json.loads(config.read_text())['training']['step'] + first_step(out_dir)
            return RUN / f'from_step_{done}', STEPS - done, out_dir / 'export'
    return RUN, STEPS, shipped_weights_path('splitbrain_alexnet', 'tinyimagenet_128')


def check_start_weights(path: Path) -> None:
    """A new run must start from the 96,000-image weights, not from whatever file is shipped now."""
    if sha256_of(path) != START_WEIGHTS_SHA256:
        raise WeightsError(f'{path}: expected the 96,000-image release (sha256 {START_WEIGHTS_SHA256[:12]}...), got '
                           f'other weights; put it back from git history (git show {START_WEIGHTS_GIT} > {path}), run '
                           'again, then git checkout the file')


def first_step(out_dir: Path) -> int:
    return int(out_dir.name.removeprefix('from_step_')) if out_dir.name.startswith('from_step_') else 0


def steps_left(out_dir: Path) -> int:
    return STEPS - first_step(out_dir)


def main(argv: list[str]) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    out_dir, max_steps, init = current_run()
    if argv == ['--export']:
        python('-m', 'training.export', f'--out_dir={out_dir}', f'--export_dir={out_dir / "export"}')
        return
    if argv:
        raise SystemExit(f'usage: python -m training.release [--export], got {argv}')
    flags = [f'--{key}={value}' for key, value in RECIPE.items()]
    flags += [f'--out_dir={out_dir}', f'--max_steps={max_steps}', f'--ab_prior={ab_prior()}']
    if (out_dir / CHECKPOINT).is_file():
        flags.append('--resume')
    else:
        if out_dir == RUN:
            check_start_weights(init)
        flags.append(f'--init_weights={init}')
    python('-m', 'training.train', *flags)
    python('-m', 'training.export', f'--out_dir={out_dir}', f'--export_dir={out_dir / "export"}')


if __name__ == '__main__':
    sys.exit(exits.run(lambda: main(sys.argv[1:])))
