"""The ab prior for class rebalancing: how often each ab bin is a training target, estimated from photos.

    python -m training.ab_prior --prior_images=4096 --out=runs/ab_prior.json

Any trainer ``Config`` flag is accepted (``--data``, ``--input_size``, ``--crop_scale_min``, ``--seed``,
``--layers``...), so the estimate sees the crops and the target grid training will; ``--out`` is the JSON
file (default ``runs/ab_prior.json``) that ``python -m training.train --ab_prior=...`` reads. Without
``--ab_prior`` the trainer estimates the prior itself at the start of a run.
"""
import json
import math
import sys
from pathlib import Path
from typing import Any

import timm
import torch

import splitbrain_hub  # noqa: F401  (registers the models in timm)
from splitbrain_hub import exits
from splitbrain_hub.errors import InputError
from splitbrain_hub.files import atomic_write
from splitbrain_hub.hub import DEFAULT_ARCHITECTURE
from splitbrain_hub.ops.bins import ab_bin_centers, ab_bin_count, hard_encode
from training.config import layer_table, parse_args
from training.data import BatchStream, build_index, make_loader
from training.objectives import downsample


@torch.no_grad()
def estimate_ab_prior(data: str, images: int, input_size: int, crop_scale_min: float, seed: int,
                      device: torch.device, progress: bool = False, layers: dict[str, Any] | None = None,
                      ) -> torch.Tensor:
    """How often each ab bin is the nearest bin of a target cell: colour photos, crops as in training,
    Lab area-averaged onto the conv5 grid (of the network with layer table ``layers``) exactly as the loss
    sees its targets."""
    from tqdm import tqdm
    model = timm.create_model(DEFAULT_ARCHITECTURE, **({'layers': layers} if layers else {})).to(device)
    grid = model.forward_pretext(torch.zeros(1, 3, input_size, input_size, device=device))['l_half'].shape[-2:]
    batch = min(64, images)
    stream = BatchStream(build_index(data), batch, input_size, (crop_scale_min, 1.0), seed)
    counts = torch.zeros(ab_bin_count(), dtype=torch.float64, device=device)
    centers = ab_bin_centers(device)
    loader = iter(make_loader(stream, 0, False))
    for _ in tqdm(range(math.ceil(images / batch)), desc='ab prior', disable=not progress):
        _, uint8, _, colour = next(loader)
        lab = model.data_lab.lab(uint8.to(device).float() / 255)[colour.to(device)]
        nearest = hard_encode(downsample(lab, grid)[:, 1:], centers)
        counts += torch.bincount(nearest.flatten(), minlength=len(centers)).double()
    return counts


def save_ab_prior(counts: torch.Tensor, path: Path, **provenance: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(dict(provenance, ab_bin_counts=counts.tolist())) + '\n'))


def load_ab_prior(path: str) -> torch.Tensor:
    counts = json.loads(Path(path).read_text())['ab_bin_counts']
    if len(counts) != ab_bin_count():
        raise InputError(f'{path}: expected {ab_bin_count()} ab bin counts, got {len(counts)}')
    return torch.tensor(counts, dtype=torch.float64)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(next((a.split('=', 1)[1] for a in argv if a.startswith('--out=')), 'runs/ab_prior.json'))
    config, _ = parse_args([a for a in argv if not a.startswith('--out=')])
    counts = estimate_ab_prior(config.data, config.prior_images, config.input_size, config.crop_scale_min,
                               config.seed, torch.device('cpu'), True, layer_table(config).get('layers'))
    save_ab_prior(counts, out, data=config.data, images=config.prior_images)
    print(f'wrote {out}: {int(counts.sum())} target cells over {int((counts > 0).sum())} of {len(counts)} bins')


if __name__ == '__main__':
    sys.exit(exits.run(main))
