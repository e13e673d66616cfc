"""A training run as data: every ``Config`` field is a ``--key=value`` flag, and the model it describes.

Shared by the trainer (``training.train``), the ab prior (``training.ab_prior``), the export
(``training.export``) and the benchmark (``training.bench``); a checkpoint stores its config as a dict
these flags rebuild.
"""
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch

import splitbrain_hub  # noqa: F401  (registers the models in timm)
from splitbrain_hub.errors import InputError
from training.objectives import DEFAULT_OBJECTIVE, ObjectiveSpec

# Runs live outside the work tree, so a fresh checkout (or a later session) finds and resumes them.
RUNS_DIR = Path(os.environ.get('SPLITBRAIN_HUB_RUNS', '~/.cache/splitbrain_hub/runs')).expanduser()
# Where the datasets are (tiny-imagenet/ with its shards, kodak/): a folder of this machine's, so it is named
# by this variable (or by the flags --data / --train-data), never written into the code.
DATASETS = Path(os.environ.get('SPLITBRAIN_HUB_DATASETS', '~/.cache/splitbrain_hub/datasets')).expanduser()


@dataclass
class Config:
    objective: str = DEFAULT_OBJECTIVE            # a key of training.objectives.OBJECTIVES
    data: str = str(DATASETS / 'tiny-imagenet' / 'train-*.tar')  # tar shards (comma/glob) or an image folder
    out_dir: str = str(RUNS_DIR / 'split_brain_cl')  # default root: $SPLITBRAIN_HUB_RUNS or ~/.cache/splitbrain_hub/runs
    input_size: int = 128                         # 64x64 sources upsampled by the crop
    crop_scale_min: float = 0.25                  # random-resized-crop area fraction in [min, 1]
    batch_size: int = 64                          # per process
    max_steps: int = 1000
    optimizer: str = 'adam'                       # 'adam' or 'sgd' (momentum 0.9)
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    soft_encoding: bool = True                    # False: cross-entropy on the nearest bin
    rebalance: bool = True                        # class rebalancing of the ab cl loss (see MODEL_CARD.md)
    rebalance_lambda: float = 0.5
    ab_prior: str = ''                            # JSON from `ab-prior`; '' estimates it at the start
    prior_images: int = 2048
    seed: int = 0
    init_weights: str = ''                        # start from these weights (.safetensors or export folder), not random
    layers: str = ''                              # the model's layer table as JSON; '' is AlexNet's (ALEXNET_LAYERS)
    device: str = 'auto'                          # 'auto', 'cpu', 'cuda'
    amp: str = 'auto'                             # 'auto' (bf16 where native: CUDA, AVX-512 BF16/AMX CPUs), 'bf16', 'off'
    channels_last: bool = True                    # NHWC activations: faster convolutions on CPU and CUDA
    fused_adam: bool = True                       # one fused kernel for the Adam update (fp32 state either way)
    compile: bool = False
    threads: int = 0                              # torch CPU threads; 0 leaves torch's default
    num_workers: int = 1
    checkpoint_every: int = 50
    snapshot_every: int = 0                       # also keep the weights every N steps (out_dir/snapshots/step_N): a curve
    log_every: int = 10
    progress: bool = True


def parse_args(argv: list[str], config: Config | None = None) -> tuple[Config, dict[str, str]]:
    """``--key=value`` flags -> Config (typed, unknown keys refused) and the trainer's own flags (``--resume``)."""
    config = config or Config()
    types = {f.name: f.type for f in dataclasses.fields(Config)}
    actions = {}
    for arg in argv:
        key, eq, value = arg.removeprefix('--').partition('=')
        key = key.replace('-', '_')
        if key == 'resume' and not eq:
            actions['resume'] = 'true'
        elif key in types and eq:
            kind = {int: int, float: float, str: str, bool: _bool}[types[key]]
            try:
                setattr(config, key, kind(value))
            except ValueError as e:
                raise InputError(f'--{key}: expected a {types[key].__name__}, got {value!r}') from e
        else:
            raise InputError(f'{arg}: expected --key=value with key in {sorted(types)}, or --resume')
    return config, actions


def _bool(value: str) -> bool:
    if value.lower() not in ('1', '0', 'true', 'false'):
        raise ValueError(value)
    return value.lower() in ('1', 'true')


def layer_table(config: Config) -> dict[str, Any]:
    """``layers=`` for the model: the table of ``--layers`` (JSON), or nothing for AlexNet's own."""
    if not config.layers:
        return {}
    try:
        return {'layers': json.loads(config.layers)}
    except ValueError as e:
        raise InputError(f'--layers: expected a JSON layer table (see ALEXNET_LAYERS), got {config.layers!r} ({e})') from e


def build_model(spec: ObjectiveSpec, config: Config, device: torch.device) -> torch.nn.Module:
    """The network of ``spec`` (the config's objective, resolved once by the caller) with the config's layer
    table, on ``device``; its pretrained cfg records the input size it is trained at."""
    model = timm.create_model(spec.architecture, **spec.model_kwargs(), **layer_table(config)).to(device)
    # What the network is trained on, for the exported pretrained_cfg.
    grid = model.forward_pretext(torch.zeros(1, 3, config.input_size, config.input_size, device=device)) \
        if spec.pretext else {}
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(3, config.input_size, config.input_size),
                                **({'pool_size': tuple(next(iter(grid.values())).shape[-2:])} if grid else {}))
    return model
