"""Train a split-brain autoencoder (or any row of the paper's Table 2) on CPU, one GPU or many.

Launch (from the repository root):

    # the release recipe: split-brain (cl,cl) on Tiny ImageNet train, 128 px input
    python -m training.train --out_dir=runs/release --max_steps=600
    # any GPU: same command; several GPUs or nodes: the same flags under torchrun
    torchrun --standalone --nproc_per_node=8 -m training.train --out_dir=runs/release --max_steps=20000
    # a Table 2 ablation: another objective spec (see training/objectives.py)
    python -m training.train --objective=l_to_ab_reg --out_dir=runs/l_to_ab_reg
    # continue training released weights (a fresh optimizer and lr schedule; e.g. a longer release run)
    python -m training.train --out_dir=runs/release2 \
        --init_weights=splitbrain_hub/weights/splitbrain_alexnet.tinyimagenet_128.safetensors
    # continue a killed run exactly where its last checkpoint left it (same config unless overridden)
    python -m training.train --out_dir=runs/release --resume
    # Hub-ready folder from the last checkpoint, and its upload: see training/export.py
    python -m training.export --out_dir=runs/release --push_to_hub=org/name
    # the ab prior for class rebalancing, estimated from training images: see training/ab_prior.py
    python -m training.ab_prior --out=runs/ab_prior.json   # --data defaults to $SPLITBRAIN_HUB_DATASETS/tiny-imagenet

Every ``Config`` field is a ``--key=value`` flag; unknown keys are an error. Optimizer: Adam (betas 0.9,
0.99, as Zhang et al. train colorization nets: no BatchNorm in this AlexNet, and SGD needs a long
warm-up to move a plain AlexNet at all), linear warm-up then cosine decay to ``min_lr_ratio * lr``.
A checkpoint (``out_dir/ckpt.pt``, written atomically: a full disk keeps the previous one) holds model,
optimizer, scheduler, config, step, RNG states and the data position (batches consumed), so ``--resume``
continues bit for bit on CPU. ``metrics.jsonl`` gains whole lines only, a full disk or not.
Under torchrun every rank reads its own batches (see training/data.py); rank 0 logs its own losses and
writes the checkpoints. The CUDA path: bf16 autocast, channels_last, cudnn.benchmark, pinned memory.
"""
import dataclasses
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from splitbrain_hub import exits
from splitbrain_hub.batch.distributed import Rank, from_environment, local_device, process_group
from splitbrain_hub.errors import InputError
from splitbrain_hub.files import append_line, atomic_write_bytes, make_folder
from splitbrain_hub.hub import load_safetensors, save_pretrained, weights_file
from splitbrain_hub.ops.precision import autocast, autocast_dtype, precision_name
from training.ab_prior import estimate_ab_prior, load_ab_prior, save_ab_prior
from training.config import Config, build_model, layer_table, parse_args
from training.data import BatchStream, build_index, make_loader
from training.objectives import Objective, ObjectiveSpec, get_objective

CHECKPOINT = 'ckpt.pt'
METRICS = 'metrics.jsonl'


# --- checkpoints and metrics -----------------------------------------------------------------

def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """A kill or a full disk leaves the old checkpoint or the new one, never half of one."""
    buffer = io.BytesIO()
    # In memory first: torch.save words a full disk as an opaque 'unexpected pos'; the bytes' own write says it.
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f'--resume: expected a checkpoint at {path}, found none')
    return torch.load(path, map_location='cpu', weights_only=True)  # tensors and plain data only


def read_metrics(out_dir: Path, upto_step: int | None = None) -> list[dict[str, Any]]:
    path = out_dir / METRICS
    if not path.is_file():
        return []
    # Every line ends in a newline (append_line); a last one without is half of a line, e.g. written by an
    # older version onto a full disk.
    lines = path.read_text().split('\n')[:-1]
    rows = [json.loads(line) for line in lines if line.strip()]
    return [r for r in rows if upto_step is None or r['step'] <= upto_step]


# --- training --------------------------------------------------------------------------------------

def lr_factor(step: int, config: Config) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def setup_device(config: Config) -> tuple[torch.device, Rank]:
    """This process's device and its rank (torchrun's, read by the package as the CLI reads it), and the
    process-wide settings of a training run: cuDNN autotuning and TF32 on CUDA, the CPU thread count."""
    rank = from_environment()
    device_type = ('cuda' if torch.cuda.is_available() else 'cpu') if config.device == 'auto' else config.device
    device = local_device(torch.device(device_type), rank)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if config.threads:
        torch.set_num_threads(config.threads)
    return device, rank


def make_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == 'adam':
        return torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.99), weight_decay=config.weight_decay,
                                fused=config.fused_adam or None)
    if config.optimizer == 'sgd':
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    raise InputError(f'optimizer: expected adam or sgd, got {config.optimizer!r}')


def make_objective(spec: ObjectiveSpec, config: Config, model: torch.nn.Module, state: dict[str, Any] | None,
                   out_dir: Path, master: bool) -> tuple[Objective, torch.Tensor | None]:
    """The loss module of ``spec`` (the config's objective), with the ab prior (from the checkpoint, a file or
    estimated) when its ab cl terms are class-rebalanced."""
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
                  images: torch.Tensor, labels: torch.Tensor, colour: torch.Tensor, amp_dtype: torch.dtype | None,
                  channels_last: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
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


@dataclass
class Progress:
    """How far a run is; a checkpoint stores it and ``--resume`` continues from it."""
    step: int = 0
    images_seen: int = 0
    train_seconds: float = 0.0


def restore(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device) -> Progress:
    """Load a checkpoint's model, optimizer, scheduler and RNG states; return where it stood."""
    model.load_state_dict(state['model'])
    optimizer.load_state_dict(state['optimizer'])
    scheduler.load_state_dict(state['scheduler'])
    torch.set_rng_state(state['rng']['torch'])
    if device.type == 'cuda' and state['rng'].get('cuda') is not None:
        torch.cuda.set_rng_state(state['rng']['cuda'])
    return Progress(state['step'], state['images_seen'], state['train_seconds'])


def load_init_weights(model: torch.nn.Module, path: str) -> None:
    """Start from saved weights (fp16 ones are widened to the model's fp32); the optimizer and schedule start fresh."""
    state_dict = load_safetensors(weights_file(path))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise InputError(f"--init_weights={path}: expected the weights of this run's model, got others ({e})") from e


def drop_metrics_after(out_dir: Path, step: int) -> None:
    """Metrics written after the checkpoint by a killed run are replayed on resume: drop them."""
    rows = read_metrics(out_dir, step)
    atomic_write_bytes(out_dir / METRICS, ''.join(json.dumps(r) + '\n' for r in rows).encode())


def wrap_for_training(objective: torch.nn.Module, config: Config, device: torch.device) -> torch.nn.Module:
    """The objective as the loop calls it: compiled if asked, DDP-wrapped under torchrun."""
    network = torch.compile(objective) if config.compile else objective
    if dist.is_initialized():
        network = DistributedDataParallel(network, device_ids=[device.index] if device.type == 'cuda' else None)
    return network


def checkpoint_state(config: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, progress: Progress, precision: str,
                     dataset_size: int, ab_prior: torch.Tensor | None, device: torch.device) -> dict[str, Any]:
    """Everything ``--resume`` needs to continue bit for bit, and ``training.export`` to describe the run."""
    return dict(model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                config=dataclasses.asdict(config), precision=precision, step=progress.step,
                images_seen=progress.images_seen, train_seconds=progress.train_seconds, dataset_size=dataset_size,
                ab_prior=ab_prior, rng=dict(torch=torch.get_rng_state(),
                                            cuda=torch.cuda.get_rng_state() if device.type == 'cuda' else None))


def save_snapshot(out_dir: Path, model: torch.nn.Module, progress: Progress) -> Path:
    """The weights as they are now (fp16 Hub folder ``out_dir/snapshots/step_NNNNNN``): a point of the run's curve."""
    folder = out_dir / 'snapshots' / f'step_{progress.step:06d}'
    return save_pretrained(model, folder, dtype=torch.float16, extra_config={'training': dataclasses.asdict(progress)})


class LossWindow:
    """Losses and timings summed over the steps since the last metrics row."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps, self.data_seconds, self.start = 0, 0.0, time.perf_counter()

    def add(self, loss: torch.Tensor, losses: dict[str, torch.Tensor], data_seconds: float) -> None:
        self.steps += 1
        self.data_seconds += data_seconds
        for name, value in dict(losses, loss=loss).items():
            self.sums[name] = self.sums.get(name, 0.0) + value.item()

    def row(self, progress: Progress, images_per_step: int, lr: float, precision: str) -> dict[str, Any]:
        """The metrics.jsonl row of the window: mean losses, throughput, time waiting for data."""
        elapsed = time.perf_counter() - self.start
        mean = {name: total / self.steps for name, total in self.sums.items()}
        return dict(step=progress.step, images_seen=progress.images_seen, loss=mean.pop('loss'), losses=mean,
                    img_per_s=self.steps * images_per_step / elapsed, data_wait=self.data_seconds / elapsed,
                    lr=lr, train_seconds=progress.train_seconds, precision=precision)


def train(config: Config, resume: bool = False) -> dict[str, Any]:
    """Train ``config``'s objective for ``max_steps`` (from the checkpoint in ``out_dir`` with ``resume``)."""
    from tqdm import tqdm
    device, torchrun = setup_device(config)
    rank, world_size = torchrun.rank, torchrun.world_size
    # Under torchrun: the process group of DDP's gradient all-reduce (ranks stay in step: torch's default timeout).
    with process_group(torchrun, device, timeout=None):
        amp_dtype = autocast_dtype(config.amp, device)
        precision = precision_name(amp_dtype)
        out_dir = Path(config.out_dir)
        make_folder(out_dir)
        master = rank == 0

        state = load_checkpoint(out_dir / CHECKPOINT) if resume else None
        torch.manual_seed(config.seed + rank)
        spec = get_objective(config.objective)  # resolved once, handed to everything that needs it
        model = build_model(spec, config, device)
        objective, ab_prior = make_objective(spec, config, model, state, out_dir, master)
        optimizer = make_optimizer(config, model)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
        if state is None and config.init_weights:
            load_init_weights(model, config.init_weights)
        progress = Progress() if state is None else restore(state, model, optimizer, scheduler, device)
        if state is not None and master:
            drop_metrics_after(out_dir, progress.step)
        network = wrap_for_training(objective, config, device)
        if master:
            print(f'{spec.name}: {device}, precision {precision} (amp={config.amp}), '
                  f'torch threads {torch.get_num_threads()}', file=sys.stderr, flush=True)

        # Rank r reads global batches r, r + world, ...; step s consumes global batches s*world .. +world-1.
        samples = build_index(config.data)
        stream = BatchStream(samples, config.batch_size, config.input_size, (config.crop_scale_min, 1.0),
                             config.seed, start_batch=progress.step * world_size, rank=rank, world_size=world_size)
        loader = iter(make_loader(stream, config.num_workers, pin_memory=device.type == 'cuda'))

        model.train()
        window = LossWindow()
        bar = tqdm(total=config.max_steps, initial=progress.step, disable=not (config.progress and master), desc=spec.name)
        while progress.step < config.max_steps:
            t0 = time.perf_counter()
            global_batch, images, labels, colour = next(loader)
            if global_batch != progress.step * world_size + rank:
                raise RuntimeError(f'data order: expected batch {progress.step * world_size + rank}, got {global_batch}')
            images = images.to(device, non_blocking=True)
            labels, colour = labels.to(device, non_blocking=True), colour.to(device, non_blocking=True)
            t1 = time.perf_counter()
            loss, losses = training_step(network, model, optimizer, images, labels, colour, amp_dtype, config.channels_last)
            scheduler.step()
            progress.step += 1
            progress.images_seen += config.batch_size * world_size
            progress.train_seconds += time.perf_counter() - t0
            window.add(loss, losses, t1 - t0)
            bar.update(1)
            last = progress.step == config.max_steps
            if progress.step % config.log_every == 0 or last:
                row = window.row(progress, config.batch_size * world_size, scheduler.get_last_lr()[0], precision)
                if master:
                    append_line(out_dir / METRICS, json.dumps(row))
                    bar.set_postfix(loss=f'{row["loss"]:.3f}', img_s=f'{row["img_per_s"]:.1f}')
                window = LossWindow()
            if (progress.step % config.checkpoint_every == 0 or last) and master:
                save_checkpoint(out_dir / CHECKPOINT, checkpoint_state(config, model, optimizer, scheduler, progress,
                                                                       precision, len(samples), ab_prior, device))
            if config.snapshot_every and progress.step % config.snapshot_every == 0 and master:
                save_snapshot(out_dir, model, progress)
        bar.close()
        return dict(dataclasses.asdict(progress), precision=precision)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if {'-h', '--help'} & set(argv):
        print(__doc__)
        print('Flags (--key=value), with their defaults:')
        for name, value in dataclasses.asdict(Config()).items():
            print(f'  --{name}={value}')
        return
    config, actions = parse_args(argv)
    resume = 'resume' in actions
    if resume:  # the checkpoint's config, with the flags given now on top (e.g. a longer --max_steps)
        saved = load_checkpoint(Path(config.out_dir) / CHECKPOINT)['config']
        config, _ = parse_args([f'--{k}={v}' for k, v in saved.items()] + [a for a in argv if a != '--resume'])
    result = train(config, resume=resume)
    print(json.dumps(result))


if __name__ == '__main__':
    sys.exit(exits.run(main))
