"""The batch runner of the image commands: this rank's batches decoded ahead, processed, outputs written, summed up.

An input whose outputs all exist is skipped unless ``overwrite``; each output is written to a temporary
file and renamed into place (``files.atomic_write``), so a killed run never leaves half a file and a rerun
does the rest. A file that cannot be read is reported (path and reason) and skipped. Under ``torchrun`` each
rank runs its share (``distributed.py``) and rank 0 prints the summary of all of them; every rank returns
the same exit status: ``EXIT_OK`` all done, ``EXIT_FAILED_INPUTS`` some inputs failed (the others are
``splitbrain_hub.exits``').

An output that cannot be written because of the file system as a whole (a full disk, a read-only one) stops
the run at once, since every later write would fail too: a ``StorageError`` saying how many were done. What
was written stays; a rerun of the same command, once there is space, does exactly the rest.
"""
import argparse
import errno
import io
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, SplitBrainError, StorageError
from ..exits import EXIT_FAILED_INPUTS, EXIT_OK, EXIT_USAGE
from ..files import atomic_write_bytes, make_folder
from ..ops.precision import resolve_device
from . import distributed, jobs, loader

__all__ = ['EXIT_FAILED_INPUTS', 'EXIT_OK', 'EXIT_USAGE', 'Process', 'ShardRows', 'rank_and_device', 'run_batches',
           'save_image', 'save_npy', 'save_safetensors']

# Write failures no later write escapes; any other (a name too long, a folder not writable) fails one input.
_STOPS_THE_RUN = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


# --- writing outputs ------------------------------------------------------------------------------

# Each output is encoded in memory, then written by files.atomic_write_bytes: PIL, numpy and safetensors
# each word a full disk their own way, the bytes' own write keeps the system's error number.

def _write(path: Path, data: bytes | memoryview) -> None:
    """``data`` to a temporary file renamed over ``path``, its folder created if missing."""
    make_folder(path.parent)
    atomic_write_bytes(path, data)


def save_image(image: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    _write(path, buffer.getbuffer())


def save_npy(array: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    _write(path, buffer.getbuffer())


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save
    _write(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


class ShardRows:
    """Features of the images of one shard, gathered batch by batch, written as one file when the shard ends.

    safetensors: one (N, C, h, w) tensor per layer, the N image keys in the metadata (``keys``, a JSON
    list, row order). npy: one structured array of N rows with fields ``key`` and one per layer.
    """

    def __init__(self, layers: Sequence[str], file_format: str) -> None:
        self.layers, self.format = list(layers), file_format
        self.keys: dict[Path, list[str]] = defaultdict(list)
        self.rows: dict[Path, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))

    def add(self, output: Path, keys: list[str], features: dict[str, torch.Tensor]) -> None:
        self.keys[output] += keys
        for layer in self.layers:
            self.rows[output][layer].append(features[layer].cpu())

    def write(self, output: Path) -> None:
        keys, rows = self.keys.pop(output, []), self.rows.pop(output, {})
        if not keys:
            return  # no image of the shard could be read: its failures are reported, there is nothing to write
        stacked = {layer: torch.cat(rows[layer]).contiguous() for layer in self.layers}
        if self.format == 'safetensors':
            save_safetensors(stacked, output, metadata={'keys': json.dumps(keys)})
            return
        fields = [('key', f'U{max(1, max(map(len, keys)))}')]
        fields += [(layer, '<f4', tuple(stacked[layer].shape[1:])) for layer in self.layers]
        table = np.empty(len(keys), dtype=fields)
        table['key'] = keys
        for layer in self.layers:
            table[layer] = stacked[layer].numpy()
        save_npy(table, output)


# --- the batch runner -----------------------------------------------------------------------------

Process = Callable[[loader.Decoded], None]


def rank_and_device(args: argparse.Namespace):
    """This process's rank (torchrun's, or the only one) and its device (GPU ``LOCAL_RANK`` under torchrun)."""
    if not (args.inputs or args.from_file or args.shards):
        raise InputError('inputs: expected image files, folders or patterns, --from-file or --shards, got none')
    rank = distributed.from_environment()
    return rank, distributed.local_device(resolve_device(args.device), rank)


def run_batches(args: argparse.Namespace, name: str, layout: jobs.Layout, process: Process, rank: distributed.Rank,
                 device: torch.device, shard_rows: ShardRows | None = None) -> int:
    """Run ``process`` over this rank's batches, decoded ahead; print failures; rank 0 prints the summary."""
    from tqdm import tqdm
    start = time.perf_counter()
    with distributed.process_group(rank, device):
        make_folder(args.output_dir)
        parts, missing = jobs.plan(args.inputs, args.from_file, args.shards, args.recursive, layout, args.batch_size)
        batches, skipped, failures = jobs.batches_to_run(distributed.share(parts, rank), layout, args.batch_size,
                                                         args.overwrite)
        failures = (missing if rank.rank == 0 else []) + failures  # every rank finds the same missing inputs
        done, waiting = 0, 0.0
        workers = loader.default_workers(rank.local_world_size) if args.workers is None else args.workers
        decoded_batches = iter(loader.decoded_batches(batches, workers, device.type == 'cuda', args.max_pixels))
        desc = name if rank.world_size == 1 else f'{name} ({rank})'
        total, attempted = sum(len(b.jobs) - len(b.done) for b in batches), 0
        with tqdm(total=total, unit='img', desc=desc, file=sys.stderr, disable=None if rank.rank == 0 else True) as bar:
            for _, message in failures:
                bar.write(f'failed: {message}', file=sys.stderr)
            while True:
                before = time.perf_counter()
                decoded = next(decoded_batches, None)
                waiting += time.perf_counter() - before  # the network idles while it waits for images
                if decoded is None:
                    break
                for job, message in decoded.failures:
                    failures.append((job.name, message))
                    bar.write(f'failed: {message}', file=sys.stderr)
                try:
                    if decoded.images:
                        try:
                            process(decoded)
                            done += sum(job not in decoded.batch.done for job in decoded.jobs)
                        except SplitBrainError as e:  # e.g. a model that cannot take these images
                            if _every_write_fails(e):
                                raise
                            failures += [(job.name, f'{job.name}: {e}') for job in decoded.jobs]
                            bar.write(f'failed: {", ".join(job.name for job in decoded.jobs)}: {e}', file=sys.stderr)
                    if shard_rows is not None and decoded.batch.last:
                        shard_rows.write(decoded.batch.shard_output)
                except StorageError as e:
                    if not _every_write_fails(e):
                        raise
                    written = sum(job not in decoded.batch.done and bool(job.outputs) and all(o.exists() for o in job.outputs)
                                  for job in decoded.jobs)
                    raise _stopped(name, e, done + written, total - attempted - written) from e
                attempted += len(decoded.batch.jobs) - len(decoded.batch.done)
                bar.update(len(decoded.batch.jobs) - len(decoded.batch.done))
        mine = [done, skipped, len(failures), waiting, time.perf_counter() - start]
        ranks = distributed.every_rank(mine, rank, device)
    done, skipped, failed, waiting, seconds = (sum(column) for column in zip(*ranks))
    if rank.rank == 0:
        wall = max(row[4] for row in ranks)  # the job ends with its slowest rank
        unit = 'shards skipped (outputs exist)' if layout.shard_suffix else 'skipped (outputs exist)'
        processes = '' if rank.world_size == 1 else f' by {rank.world_size} processes'
        speed = (f' in {wall:.1f} s ({done / wall:.1f} img/s, {100 * waiting / seconds:.0f} % of the time waiting '
                 'for images)') if done else ''
        print(f'{name}: {done:.0f} done, {skipped:.0f} {unit}, {failed:.0f} failed{processes}{speed}; '
              f'outputs in {args.output_dir}')
    return EXIT_FAILED_INPUTS if failed else EXIT_OK


def _every_write_fails(error: SplitBrainError) -> bool:
    """A write failed as every later one would too: the run stops (see the module docstring)."""
    return isinstance(error, StorageError) and error.errno in _STOPS_THE_RUN


def _stopped(name: str, error: StorageError, done: int, left: int) -> StorageError:
    """The run's end on a full or read-only disk: what failed, and how much a rerun will do."""
    return StorageError(f'{name} stopped: {error}; {done} done, {left} left (free space or fix the folder and '
                        'rerun the same command: done outputs are skipped)', error.errno)
