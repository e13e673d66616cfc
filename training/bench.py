"""Training img/s of a recipe with the real data pipeline vs synthetic in-memory batches.

    python -m training.bench                       # default recipe (split-brain (cl,cl), 128 px, batch 64)
    python -m training.bench --batch_size=32 --threads=1 --rounds=3 --steps=2

Both modes run the same training step (colour conversion, targets, forward, backward, Adam). The real
mode pulls each batch from the DataLoader (tar shards, decode, crop, workers); the synthetic mode
reuses one batch already in memory. Rounds alternate the two modes so that a change in machine load
hits both alike. The goal is real >= 90% of synthetic: then the input pipeline does not limit the step.
Any ``Config`` key is accepted as ``--key=value`` (see training/train.py).
"""
import sys
import time

import torch

from splitbrain_hub.quantize import ab_bin_count
from training.data import BatchStream, build_index, make_loader
from training.objectives import Objective, get_objective
from training.train import build_model, load_ab_prior, parse_args


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
    model = build_model(config, device)
    prior = load_ab_prior(config.ab_prior) if config.ab_prior else torch.ones(ab_bin_count(), dtype=torch.float64)
    objective = Objective(model, get_objective(config.objective), ab_prior=prior if config.rebalance else None)
    objective = objective.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.99))
    stream = BatchStream(build_index(config.data), config.batch_size, config.input_size,
                         (config.crop_scale_min, 1.0), config.seed)
    loader = iter(make_loader(stream, config.num_workers, pin_memory=device.type == 'cuda'))
    synthetic = [t.to(device) for t in next(loader)[1:]]

    def step(images, labels, colour) -> None:
        images = images.to(device, non_blocking=True)
        lab = model.data_lab.lab(images.float() / 255)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == 'cuda'):
            loss, _ = objective(lab, labels.to(device, non_blocking=True), colour.to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(real: bool) -> float:
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step(*(next(loader)[1:] if real else synthetic))
        if device.type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step(*synthetic)  # warm-up (allocator, cudnn autotuning, worker start)
    seconds = {True: 0.0, False: 0.0}
    for _ in range(rounds):
        for real in (False, True):
            seconds[real] += timed(real)
    images = rounds * steps * config.batch_size
    synthetic_rate, real_rate = images / seconds[False], images / seconds[True]
    print(f'device {device}, torch threads {torch.get_num_threads()}, workers {config.num_workers}, '
          f'batch {config.batch_size}, input {config.input_size}, {rounds} rounds x {steps} steps per mode')
    print(f'synthetic in-memory batches: {synthetic_rate:.1f} img/s')
    print(f'real data pipeline:          {real_rate:.1f} img/s')
    print(f'ratio real / synthetic:      {real_rate / synthetic_rate:.3f} (goal >= 0.90)')


if __name__ == '__main__':
    main()
