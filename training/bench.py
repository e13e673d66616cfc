"""Training img/s: the fp32 step against the default recipe, and the real data pipeline against memory.

    python -m training.bench                       # split-brain (cl,cl), 128 px, batch 64
    python -m training.bench --batch_size=32 --threads=1 --rounds=3 --steps=2

Three modes run the trainer's own step (``training.train.training_step``: colour conversion, targets,
forward, backward, optimizer update) in one process, round-robin, so a change in machine load hits all
alike:

* ``fp32``: the plain recipe: amp off, NCHW, unfused Adam, one batch already in memory;
* ``default``: the given config (default: bf16 autocast where native, channels_last, fused Adam), same batch;
* ``default, real data``: the same step, each batch pulled from the DataLoader (tar shards, decode, crop).

Goals: default >= 1.6x fp32 (the mixed-precision recipe pays), real >= 0.90x in-memory (the input pipeline
does not limit the step). Any ``Config`` key is accepted as ``--key=value`` (see training/train.py).
"""
import dataclasses
import sys
import time
from collections.abc import Callable

import torch

from splitbrain_hub import exits
from splitbrain_hub.ops.bins import ab_bin_count
from splitbrain_hub.ops.precision import autocast_dtype, precision_name
from training.ab_prior import load_ab_prior
from training.config import Config, build_model, parse_args
from training.data import BatchStream, build_index, make_loader
from training.objectives import Objective, get_objective
from training.train import make_optimizer, training_step

FP32 = dict(amp='off', channels_last=False, fused_adam=False)


def make_step(config: Config, device: torch.device, seed: int) -> Callable[..., None]:
    """A training step of ``config`` with its own model and optimizer (same initial weights for every mode)."""
    torch.manual_seed(seed)
    spec = get_objective(config.objective)
    model = build_model(spec, config, device)
    prior = load_ab_prior(config.ab_prior) if config.ab_prior else torch.ones(ab_bin_count(), dtype=torch.float64)
    objective = Objective(model, spec, ab_prior=prior if config.rebalance else None)
    objective = objective.to(device)
    if config.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    network = torch.compile(objective) if config.compile else objective
    optimizer = make_optimizer(config, model)
    amp_dtype = autocast_dtype(config.amp, device)

    def step(images: torch.Tensor, labels: torch.Tensor, colour: torch.Tensor) -> None:
        training_step(network, model, optimizer, images.to(device, non_blocking=True), labels.to(device),
                      colour.to(device), amp_dtype, config.channels_last)
    step.precision = precision_name(amp_dtype)
    return step


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if {'-h', '--help'} & set(argv):
        print(__doc__)
        return
    own = {a.split('=')[0][2:]: int(a.split('=')[1]) for a in argv if a.split('=')[0] in ('--rounds', '--steps')}
    config, _ = parse_args([a for a in argv if a.split('=')[0] not in ('--rounds', '--steps')])
    rounds, steps = own.get('rounds', 3), own.get('steps', 2)
    device = torch.device('cuda' if config.device in ('auto', 'cuda') and torch.cuda.is_available() else 'cpu')
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.backends.cudnn.benchmark = True
    fp32_step = make_step(dataclasses.replace(config, **FP32, compile=False), device, config.seed)
    default_step = make_step(config, device, config.seed)
    stream = BatchStream(build_index(config.data), config.batch_size, config.input_size,
                         (config.crop_scale_min, 1.0), config.seed)
    loader = iter(make_loader(stream, config.num_workers, pin_memory=device.type == 'cuda'))
    in_memory = next(loader)[1:]
    modes: dict[str, Callable[[], None]] = {
        'fp32': lambda: fp32_step(*in_memory),
        'default': lambda: default_step(*in_memory),
        'default, real data': lambda: default_step(*next(loader)[1:]),
    }

    def timed(run: Callable[[], None], steps: int = steps) -> float:
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            run()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - start

    first_call = {name: timed(run, 1) for name, run in modes.items()}  # allocator, kernel choice, compilation
    seconds = dict.fromkeys(modes, 0.0)
    for _ in range(rounds):
        for name, run in modes.items():
            seconds[name] += timed(run)
    rate = {name: rounds * steps * config.batch_size / s for name, s in seconds.items()}
    print(f'device {device}, torch threads {torch.get_num_threads()}, workers {config.num_workers}, '
          f'batch {config.batch_size}, input {config.input_size}, objective {config.objective}, '
          f'{rounds} rounds x {steps} steps per mode')
    print(f'fp32 (amp off, NCHW, unfused Adam), in memory:  {rate["fp32"]:.1f} img/s')
    print(f'default ({default_step.precision}, channels_last={config.channels_last}, fused_adam={config.fused_adam}, '
          f'compile={config.compile}), in memory:  {rate["default"]:.1f} img/s')
    print(f'default, real data pipeline:  {rate["default, real data"]:.1f} img/s')
    print('first step (warm-up: allocator, kernel choice, compilation): '
          + ', '.join(f'{name} {seconds:.1f} s' for name, seconds in first_call.items()))
    print(f'ratio default / fp32:  {rate["default"] / rate["fp32"]:.2f} (goal >= 1.6)')
    print(f'ratio real / in memory:  {rate["default, real data"] / rate["default"]:.3f} (goal >= 0.90)')


if __name__ == '__main__':
    sys.exit(exits.run(main))
