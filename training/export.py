"""A Hub-ready folder from a run's last checkpoint, and its upload to the Hugging Face Hub.

    python -m training.export --out_dir=runs/release                                  # -> runs/release/export
    python -m training.export --out_dir=runs/release --export_dir=runs/release/export --push_to_hub=owner/name

Any time, also while the run goes on: the checkpoint is written atomically. The folder holds fp16
``model.safetensors``, ``config.json`` (model arguments, pretrained cfg, the training recipe) and
``README.md`` (MODEL_CARD.md followed by this run's figures); ``--push_to_hub`` uploads it through
huggingface_hub (``HF_TOKEN`` or ``hf auth login``, ``HF_ENDPOINT``, proxies).
"""
import json
import sys
from pathlib import Path
from typing import Any

import torch

from splitbrain_hub import exits
from splitbrain_hub.errors import InputError
from splitbrain_hub.files import atomic_write_bytes
from splitbrain_hub.hub import WEIGHTS_NAME, save_pretrained, sha256_of
from training.config import build_model, parse_args
from training.objectives import get_objective
from training.train import CHECKPOINT, load_checkpoint, read_metrics

MODEL_CARD = Path(__file__).resolve().parents[1] / 'MODEL_CARD.md'  # the export's README.md starts with it


def export(out_dir: Path, export_dir: Path) -> Path:
    """The Hub folder from the last checkpoint: fp16 model.safetensors, config.json, README.md."""
    state = load_checkpoint(out_dir / CHECKPOINT)
    config, _ = parse_args([f'--{k}={v}' for k, v in state['config'].items()])
    model = build_model(get_objective(config.objective), config, torch.device('cpu'))
    model.load_state_dict(state['model'])
    metrics = read_metrics(out_dir, state['step'])
    last = metrics[-1] if metrics else {}
    training = dict(recipe=state['config'], precision=state.get('precision', 'fp32'), step=state['step'],
                    images_seen=state['images_seen'],
                    epochs=state['images_seen'] / state['dataset_size'], train_seconds=state['train_seconds'],
                    final_losses=last.get('losses'), final_loss=last.get('loss'))
    weights = save_pretrained(model, export_dir, dtype=torch.float16, extra_config={'training': training})
    atomic_write_bytes(export_dir / 'README.md', model_card(training, weights).encode())
    return weights


def model_card(training: dict[str, Any], weights: Path) -> str:
    """The export's README.md: MODEL_CARD.md as it is (the Hub reads its front matter), then this run.

    MODEL_CARD.md describes the released weights; the section added here gives the figures of the run
    the exported file comes from, which may be another one (another objective, budget or data).
    """
    spec = get_objective(training['recipe']['objective'])
    return MODEL_CARD.read_text().rstrip('\n') + '\n\n' + '\n'.join([
        '## This export', '',
        'The sections above describe the released weights. The files of this folder come from the run below.', '',
        f'- objective: `{spec.name}`: {spec.description}',
        f'- steps: {training["step"]}, images seen: {training["images_seen"]} ({training["epochs"]:.2f} epochs)',
        f'- training wall time: {training["train_seconds"]:.0f} s, precision {training["precision"]}',
        f'- final losses (mean of the last logging window): {json.dumps(training["final_losses"])}',
        f'- weights: `{weights.name}`, fp16, {weights.stat().st_size} bytes, sha256 `{sha256_of(weights)}`',
        '', 'Load it with timm (`pip install splitbrain-hub`; importing it registers the architecture):', '',
        '```python', 'import timm, splitbrain_hub',
        "model = timm.create_model('hf-hub:<owner>/<name>', pretrained=True)       # this folder on the Hub",
        "model = timm.create_model('local-dir:<this folder>', pretrained=True)     # or on disk", '```', '',
        '### Recipe', '', '```json', json.dumps(training['recipe'], indent=2), '```', ''])


EXPORTED_FILES = ('model.safetensors', 'config.json', 'README.md')


def push_to_hub(export_dir: Path, repo_id: str) -> str:
    """Upload the export to Hub repo ``repo_id`` (created if needed) through huggingface_hub; returns the commit URL.

    huggingface_hub's settings apply (``HF_TOKEN`` or ``hf auth login``, ``HF_ENDPOINT``, proxies).
    """
    from huggingface_hub import HfApi
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    commit = api.upload_folder(folder_path=str(export_dir), repo_id=repo_id, allow_patterns=list(EXPORTED_FILES),
                               commit_message=f'splitbrain_hub export ({sha256_of(export_dir / WEIGHTS_NAME)[:12]})')
    return commit.commit_url


def hub_repo_id(value: str) -> str:
    from huggingface_hub.utils import validate_repo_id
    try:
        validate_repo_id(value)
    except ValueError as e:
        raise InputError(f"--push_to_hub: expected a Hub repo id 'owner/name', got {value!r} ({e})") from None
    return value


def parse_export_args(argv: list[str]) -> tuple[Path, Path, str | None]:
    """``--out_dir=RUN [--export_dir=DIR] [--push_to_hub=REPO_ID]`` -> (run folder, export folder, repo id)."""
    flags = dict(arg.removeprefix('--').partition('=')[::2] for arg in argv)
    unknown = sorted(set(flags) - {'out_dir', 'export_dir', 'push_to_hub'})
    if unknown or not flags.get('out_dir'):
        raise InputError(f'expected --out_dir=RUN [--export_dir=DIR] [--push_to_hub=REPO_ID], got {argv}')
    out_dir = Path(flags['out_dir'])
    repo_id = hub_repo_id(flags['push_to_hub']) if 'push_to_hub' in flags else None
    return out_dir, Path(flags.get('export_dir') or out_dir / 'export'), repo_id


def main(argv: list[str] | None = None) -> None:
    out_dir, export_dir, repo_id = parse_export_args(sys.argv[1:] if argv is None else argv)
    weights = export(out_dir, export_dir)
    print(f'exported {weights} ({weights.stat().st_size} bytes, sha256 {sha256_of(weights)})')
    if repo_id:
        print(f'pushed to {push_to_hub(export_dir, repo_id)}')


if __name__ == '__main__':
    sys.exit(exits.run(main))
