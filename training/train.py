"""Train a split-brain autoencoder (or any row of the paper's Table 2) on CPU, one GPU or many.

Launch (from the repository root):

    # the release recipe: split-brain (cl,cl) on Tiny ImageNet train, 128 px input
    python -m training.train --out_dir=runs/release --max_steps=600
    # any GPU: same command; several GPUs or nodes: the same flags under torchrun
    torchrun --standalone --nproc_per_node=8 -m training.train --out_dir=runs/release --max_steps=20000
    # a Table 2 ablation: another objective spec (see training/objectives.py)
    python -m training.train --objective=l_to_ab_reg --out_dir=runs/l_to_ab_reg
    # continue a killed run exactly where its last checkpoint left it (same config unless overridden)
    python -m training.train --out_dir=runs/release --resume
    # Hub-ready folder from the last checkpoint (any time, also while the run goes on), and upload
    python -m training.train --out_dir=runs/release --export=runs/release/export
    python -m training.train --out_dir=runs/release --export=runs/release/export --push_to_hub=org/name
    # the ab prior for class rebalancing, estimated from training images
    python -m training.train ab-prior --data='../shared/datasets/tiny-imagenet/train-*.tar' --out=runs/ab_prior.json

Every ``Config`` field is a ``--key=value`` flag; unknown keys are an error. Optimizer: Adam (betas 0.9,
0.99, as Zhang et al. train colorization nets: no BatchNorm in this AlexNet, and SGD needs a long
warm-up to move a plain AlexNet at all), linear warm-up then cosine decay to ``min_lr_ratio * lr``.
A checkpoint (``out_dir/ckpt.pt``, written atomically) holds model, optimizer, scheduler, config, step,
RNG states and the data position (batches consumed), so ``--resume`` continues bit for bit on CPU.
Under torchrun every rank reads its own batches (see training/data.py); rank 0 logs its own losses and
writes the checkpoints. The CUDA path: bf16 autocast, channels_last, cudnn.benchmark, pinned memory.
"""
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import timm
import splitbrain_hub  # noqa: F401  (registers the models in timm)
from splitbrain_hub.errors import InputError
from splitbrain_hub.precision import autocast, autocast_dtype, precision_name
from splitbrain_hub.quantize import ab_bin_centers, ab_bin_count, hard_encode
from splitbrain_hub.files import atomic_write
from splitbrain_hub.weights import DEFAULT_ARCHITECTURE, WEIGHTS_NAME, save_pretrained, sha256_of
from training.data import BatchStream, build_index, make_loader
from training.objectives import DEFAULT_OBJECTIVE, Objective, downsample, get_objective

# Runs live outside the work tree, so a fresh checkout (or a later session) finds and resumes them.
RUNS_DIR = Path(os.environ.get('SPLITBRAIN_HUB_RUNS', '~/.cache/splitbrain_hub/runs')).expanduser()
CHECKPOINT = 'ckpt.pt'
MODEL_CARD = Path(__file__).resolve().parents[1] / 'MODEL_CARD.md'  # the export's README.md starts with it
METRICS = 'metrics.jsonl'


@dataclass
class Config:
    objective: str = DEFAULT_OBJECTIVE            # a key of training.objectives.OBJECTIVES
    data: str = '../shared/datasets/tiny-imagenet/train-*.tar'  # tar shards (comma/glob) or an image folder
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
    layers: str = ''                              # the model's layer table as JSON; '' is AlexNet's (ALEXNET_LAYERS)
    device: str = 'auto'                          # 'auto', 'cpu', 'cuda'
    amp: str = 'auto'                             # 'auto' (bf16 where native: CUDA, AVX-512 BF16/AMX CPUs), 'bf16', 'off'
    channels_last: bool = True                    # NHWC activations: faster convolutions on CPU and CUDA
    fused_adam: bool = True                       # one fused kernel for the Adam update (fp32 state either way)
    compile: bool = False
    threads: int = 0                              # torch CPU threads; 0 leaves torch's default
    num_workers: int = 1
    checkpoint_every: int = 50
    log_every: int = 10
    progress: bool = True


def parse_args(argv: List[str], config: Optional[Config] = None) -> Tuple[Config, Dict[str, str]]:
    """``--key=value`` flags -> Config (typed, unknown keys refused) and the trainer's own flags."""
    config = config or Config()
    types = {f.name: f.type for f in dataclasses.fields(Config)}
    actions = {}
    for arg in argv:
        key, eq, value = arg.removeprefix('--').partition('=')
        key = key.replace('-', '_')
        if key == 'resume' and not eq:
            actions['resume'] = 'true'
        elif key == 'export':
            actions[key] = value
        elif key == 'push_to_hub':
            actions[key] = _hub_repo_id(value)
        elif key in types and eq:
            kind = {int: int, float: float, str: str, bool: _bool}[types[key]]
            try:
                setattr(config, key, kind(value))
            except ValueError as e:
                raise InputError(f'--{key}: expected a {types[key].__name__}, got {value!r}') from e
        else:
            raise InputError(f'{arg}: expected --key=value with key in {sorted(types)}, or --resume, '
                             f'--export=DIR, --push_to_hub=REPO_ID')
    return config, actions


def _bool(value: str) -> bool:
    if value.lower() not in ('1', '0', 'true', 'false'):
        raise ValueError(value)
    return value.lower() in ('1', 'true')


def layer_table(config: Config) -> Dict[str, Any]:
    """``layers=`` for the model: the table of ``--layers`` (JSON), or nothing for AlexNet's own."""
    if not config.layers:
        return {}
    try:
        return {'layers': json.loads(config.layers)}
    except ValueError as e:
        raise InputError(f'--layers: expected a JSON layer table (see ALEXNET_LAYERS), got {config.layers!r} ({e})') from e


def build_model(config: Config, device: torch.device) -> torch.nn.Module:
    spec = get_objective(config.objective)
    model = timm.create_model(spec.architecture, **spec.model_kwargs(), **layer_table(config)).to(device)
    # What the network is trained on, for the exported pretrained_cfg.
    grid = model.forward_pretext(torch.zeros(1, 3, config.input_size, config.input_size, device=device)) \
        if spec.pretext else {}
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(3, config.input_size, config.input_size),
                                **({'pool_size': tuple(next(iter(grid.values())).shape[-2:])} if grid else {}))
    return model


# --- the ab prior --------------------------------------------------------------------------------

@torch.no_grad()
def estimate_ab_prior(data: str, images: int, input_size: int, crop_scale_min: float, seed: int,
                      device: torch.device, progress: bool = False, layers: Optional[Dict[str, Any]] = None,
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


# --- checkpoints, metrics, export ----------------------------------------------------------------

def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))  # a kill leaves the old checkpoint or the new one


def load_checkpoint(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise InputError(f'--resume: expected a checkpoint at {path}, found none')
    return torch.load(path, map_location='cpu', weights_only=True)  # tensors and plain data only


def read_metrics(out_dir: Path, upto_step: Optional[int] = None) -> List[Dict[str, Any]]:
    path = out_dir / METRICS
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if upto_step is None or r['step'] <= upto_step]


def export(out_dir: Path, export_dir: Path) -> Path:
    """The Hub folder from the last checkpoint: fp16 model.safetensors, config.json, README.md."""
    state = load_checkpoint(out_dir / CHECKPOINT)
    config, _ = parse_args([f'--{k}={v}' for k, v in state['config'].items()])
    model = build_model(config, torch.device('cpu'))
    model.load_state_dict(state['model'])
    metrics = read_metrics(out_dir, state['step'])
    last = metrics[-1] if metrics else {}
    training = dict(recipe=state['config'], precision=state.get('precision', 'fp32'), step=state['step'],
                    images_seen=state['images_seen'],
                    epochs=state['images_seen'] / state['dataset_size'], train_seconds=state['train_seconds'],
                    final_losses=last.get('losses'), final_loss=last.get('loss'))
    weights = save_pretrained(model, export_dir, dtype=torch.float16, extra_config={'training': training})
    (export_dir / 'README.md').write_text(model_card(training, weights))
    return weights


def model_card(training: Dict[str, Any], weights: Path) -> str:
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


def _hub_repo_id(value: str) -> str:
    from huggingface_hub.utils import validate_repo_id
    try:
        validate_repo_id(value)
    except ValueError as e:
        raise InputError(f"--push_to_hub: expected a Hub repo id 'owner/name', got {value!r} ({e})") from None
    return value


# --- training --------------------------------------------------------------------------------------

def lr_factor(step: int, config: Config) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def setup_device(config: Config) -> Tuple[torch.device, int, int]:
    """The device of this process, its rank and the world size (torchrun sets RANK / WORLD_SIZE)."""
    ddp = 'RANK' in os.environ
    rank, world_size = (int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])) if ddp else (0, 1)
    device_type = ('cuda' if torch.cuda.is_available() else 'cpu') if config.device == 'auto' else config.device
    if device_type == 'cuda':
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
        torch.cuda.set_device(local_rank)
        device = torch.device('cuda', local_rank)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device('cpu')
    if ddp:
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    if config.threads:
        torch.set_num_threads(config.threads)
    return device, rank, world_size


def make_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == 'adam':
        return torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.99), weight_decay=config.weight_decay,
                                fused=config.fused_adam or None)
    if config.optimizer == 'sgd':
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    raise InputError(f'optimizer: expected adam or sgd, got {config.optimizer!r}')


def make_objective(config: Config, model: torch.nn.Module, state: Optional[Dict[str, Any]], out_dir: Path,
                   master: bool) -> Tuple[Objective, Optional[torch.Tensor]]:
    """The loss module of the config's objective, with the ab prior (from the checkpoint, a file or estimated)
    when its ab cl terms are class-rebalanced."""
    spec = get_objective(config.objective)
    ab_prior = None
    if config.rebalance and any(t.target == 'ab' and t.loss == 'cl' for t in spec.terms):
        if state is not None:
            ab_prior = state['ab_prior']
        elif config.ab_prior:
            ab_prior = load_ab_prior(config.ab_prior)
        else:
            device = next(model.parameters()).device
            ab_prior = estimate_ab_prior(config.data, config.prior_images, config.input_size, config.crop_scale_min,
                                         config.seed, device, config.progress and master,
                                         layer_table(config).get('layers'))
            if master:
                save_ab_prior(ab_prior.cpu(), out_dir / 'ab_prior.json', data=config.data, images=config.prior_images)
        ab_prior = ab_prior.cpu()
    objective = Objective(model, spec, soft=config.soft_encoding, ab_prior=ab_prior,
                          rebalance_lambda=config.rebalance_lambda).to(next(model.parameters()).device)
    if config.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    return objective, ab_prior


def training_step(network: torch.nn.Module, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  images: torch.Tensor, labels: torch.Tensor, colour: torch.Tensor, amp_dtype: Optional[torch.dtype],
                  channels_last: bool) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """One optimisation step on a uint8 batch: Lab conversion in fp32, ``network`` (the objective, maybe compiled
    or DDP-wrapped, around ``model``) under autocast with its losses in fp32, backward, optimizer update.
    Shared with ``training.bench``."""
    lab = model.data_lab.lab(images.float() / 255)  # colour conversion in fp32, batched on the device
    if channels_last:
        lab = lab.contiguous(memory_format=torch.channels_last)
    with autocast(lab.device, amp_dtype):
        loss, losses = network(lab, labels, colour)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, losses


def train(config: Config, resume: bool = False) -> Dict[str, Any]:
    from tqdm import tqdm
    device, rank, world_size = setup_device(config)
    amp_dtype = autocast_dtype(config.amp, device)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    master = rank == 0

    # --- state: fresh, or the last checkpoint
    state = load_checkpoint(out_dir / CHECKPOINT) if resume else None
    torch.manual_seed(config.seed + rank)
    spec = get_objective(config.objective)
    model = build_model(config, device)
    objective, ab_prior = make_objective(config, model, state, out_dir, master)
    optimizer = make_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    step, images_seen, train_seconds = 0, 0, 0.0
    if state is not None:
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        step, images_seen, train_seconds = state['step'], state['images_seen'], state['train_seconds']
        torch.set_rng_state(state['rng']['torch'])
        if device.type == 'cuda' and state['rng'].get('cuda') is not None:
            torch.cuda.set_rng_state(state['rng']['cuda'])
        if master:  # metrics written after the checkpoint by the killed run are replayed: drop them
            rows = read_metrics(out_dir, step)
            (out_dir / METRICS).write_text(''.join(json.dumps(r) + '\n' for r in rows))
    network = torch.compile(objective) if config.compile else objective
    if ddp_active := dist.is_initialized():
        network = DistributedDataParallel(network, device_ids=[device.index] if device.type == 'cuda' else None)
    if master:
        print(f'{spec.name}: {device}, precision {precision_name(amp_dtype)} (amp={config.amp}), '
              f'torch threads {torch.get_num_threads()}', file=sys.stderr, flush=True)

    # --- data: rank r reads global batches r, r + world, ...; step s consumes global batches s*world .. +world-1
    samples = build_index(config.data)
    stream = BatchStream(samples, config.batch_size, config.input_size, (config.crop_scale_min, 1.0),
                         config.seed, start_batch=step * world_size, rank=rank, world_size=world_size)
    loader = iter(make_loader(stream, config.num_workers, pin_memory=device.type == 'cuda'))

    def checkpoint() -> None:
        if master:
            save_checkpoint(out_dir / CHECKPOINT, dict(
                model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                config=dataclasses.asdict(config), precision=precision_name(amp_dtype), step=step,
                images_seen=images_seen, train_seconds=train_seconds, dataset_size=len(samples), ab_prior=ab_prior,
                rng=dict(torch=torch.get_rng_state(),
                         cuda=torch.cuda.get_rng_state() if device.type == 'cuda' else None)))

    # --- the loop
    model.train()
    window: Dict[str, float] = {}
    window_start, window_steps, data_seconds = time.perf_counter(), 0, 0.0
    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress and master), desc=spec.name)
    while step < config.max_steps:
        t0 = time.perf_counter()
        global_batch, images, labels, colour = next(loader)
        if global_batch != step * world_size + rank:
            raise RuntimeError(f'data order: expected batch {step * world_size + rank}, got {global_batch}')
        images = images.to(device, non_blocking=True)
        labels, colour = labels.to(device, non_blocking=True), colour.to(device, non_blocking=True)
        t1 = time.perf_counter()
        loss, losses = training_step(network, model, optimizer, images, labels, colour, amp_dtype, config.channels_last)
        scheduler.step()
        step += 1
        images_seen += config.batch_size * world_size
        t2 = time.perf_counter()
        train_seconds += t2 - t0
        data_seconds += t1 - t0
        window_steps += 1
        for name, value in dict(losses, loss=loss).items():
            window[name] = window.get(name, 0.0) + value.item()
        bar.update(1)
        if step % config.log_every == 0 or step == config.max_steps:
            elapsed = time.perf_counter() - window_start
            row = dict(step=step, images_seen=images_seen, loss=window.pop('loss') / window_steps,
                       losses={k: v / window_steps for k, v in window.items()},
                       img_per_s=window_steps * config.batch_size * world_size / elapsed,
                       data_wait=data_seconds / elapsed, lr=scheduler.get_last_lr()[0],
                       train_seconds=train_seconds, precision=precision_name(amp_dtype))
            if master:
                with open(out_dir / METRICS, 'a') as f:
                    f.write(json.dumps(row) + '\n')
                bar.set_postfix(loss=f'{row["loss"]:.3f}', img_s=f'{row["img_per_s"]:.1f}')
            window, window_start, window_steps, data_seconds = {}, time.perf_counter(), 0, 0.0
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            checkpoint()
    bar.close()
    if ddp_active:
        dist.destroy_process_group()
    return dict(step=step, images_seen=images_seen, train_seconds=train_seconds, precision=precision_name(amp_dtype))


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if {'-h', '--help'} & set(argv):
        print(__doc__)
        print('Flags (--key=value), with their defaults:')
        for name, value in dataclasses.asdict(Config()).items():
            print(f'  --{name}={value}')
        return
    if argv[:1] == ['ab-prior']:
        options = dict(a.removeprefix('--').split('=', 1) for a in argv[1:])
        config, _ = parse_args([f'--{k}={v}' for k, v in options.items() if k != 'out'])
        out = Path(options.get('out', 'runs/ab_prior.json'))
        counts = estimate_ab_prior(config.data, config.prior_images, config.input_size, config.crop_scale_min,
                                   config.seed, torch.device('cpu'), progress=True)
        save_ab_prior(counts, out, data=config.data, images=config.prior_images)
        print(f'wrote {out}: {int(counts.sum())} target cells over {int((counts > 0).sum())} of {len(counts)} bins')
        return
    config, actions = parse_args(argv)
    if 'export' in actions or 'push_to_hub' in actions:
        export_dir = Path(actions.get('export') or Path(config.out_dir) / 'export')
        weights = export(Path(config.out_dir), export_dir)
        print(f'exported {weights} ({weights.stat().st_size} bytes, sha256 {sha256_of(weights)})')
        if actions.get('push_to_hub'):
            print(f"pushed to {push_to_hub(export_dir, actions['push_to_hub'])}")
        return
    resume = 'resume' in actions
    if resume:  # the checkpoint's config, with the flags given now on top (e.g. a longer --max_steps)
        saved = load_checkpoint(Path(config.out_dir) / CHECKPOINT)['config']
        config, _ = parse_args([f'--{k}={v}' for k, v in saved.items()] + [a for a in argv if a != '--resume'])
    result = train(config, resume=resume)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
