"""The CLI as one job over several processes: images/s with 1 and with N torchrun processes, same inputs.

    python benchmarks/bench_distributed.py [--images 256] [--nproc 1 2] [--command colorize] [--device cpu]

The inputs are the first ``--images`` photos of two Tiny ImageNet val shards, rewritten as two smaller
shards in a temporary folder (the job splits shards among processes, so there must be at least as
many shards as processes); outputs go to a temporary folder too. Each run is
``torchrun --standalone --nproc_per_node=N -m splitbrain_hub.cli COMMAND --shards ...``: the images/s
and the share of time the network waited for decoded images are the ones the job's summary line
reports (listing, decoding and writing included; interpreter start and model load excluded); the
wall time includes those. On CPU each of N > 1 processes runs 1 thread (torchrun's OMP_NUM_THREADS=1),
one process runs torch's default (all cores). On a GPU: ``--device cuda --nproc 1``.
"""
import argparse
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _timing import machine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARDS = [ROOT.parent / 'shared' / 'datasets' / 'tiny-imagenet' / f'val-00000{i}.tar' for i in (0, 1)]
SUMMARY = re.compile(r'(\d+) done, .* in ([\d.]+) s \(([\d.]+) img/s, (\d+) % of the time waiting for images\)')


def _small_shard(source: Path, target: Path, images: int) -> None:
    """The first ``images`` images of ``source`` (and their other members) as a shard of their own."""
    with tarfile.open(source) as tar, tarfile.open(target, 'w') as out:
        keys = []
        for member in tar:
            key = member.name.rsplit('.', 1)[0]
            if key not in keys:
                if len(keys) == images:
                    break
                keys.append(key)
            out.addfile(member, io.BytesIO(tar.extractfile(member).read()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=256, help='images in all (half from each shard)')
    parser.add_argument('--nproc', type=int, nargs='+', default=[1, 2], help='process counts to compare')
    parser.add_argument('--command', choices=('colorize', 'lightness', 'features'), default='colorize')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--shards', type=Path, nargs=2, default=DEFAULT_SHARDS)
    parser.add_argument('extra', nargs='*', help='more CLI arguments, after --, e.g. -- --amp off')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, shard in enumerate(args.shards):
            _small_shard(shard, tmp / f'bench-{i}.tar', args.images // 2)
        print(f'# {args.command}, {args.images} Tiny ImageNet val images (64x64 JPEG) in 2 shards, batch '
              f'{args.batch_size}, device {args.device} {" ".join(args.extra)}; {machine()}')
        rates = {}
        for nproc in args.nproc:
            command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}',
                       '-m', 'splitbrain_hub.cli', args.command, '--shards', str(tmp / 'bench-{0..1}.tar'),
                       '-o', str(tmp / f'out-{nproc}'), '--batch-size', str(args.batch_size),
                       '--device', args.device, *args.extra]
            start = time.perf_counter()
            run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, 'PYTHONPATH': str(ROOT)})
            wall = time.perf_counter() - start
            found = SUMMARY.search(run.stdout)
            if run.returncode != 0 or not found:
                sys.exit(f'{nproc} processes failed:\n{run.stdout}\n{run.stderr[-3000:]}')
            done, seconds, rate, waiting = found.groups()
            rates[nproc] = float(rate)
            print(f'{nproc} process{"es" if nproc > 1 else ""}: {done} images in {seconds} s = {rate} img/s '
                  f'({waiting} % waiting for images); {wall:.1f} s with start-up and model load')
        if len(rates) > 1:
            first = min(rates)
            for nproc in sorted(rates)[1:]:
                print(f'ratio {nproc} / {first} processes: {rates[nproc] / rates[first]:.2f}')


if __name__ == '__main__':
    main()
