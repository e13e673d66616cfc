"""Decoding ahead of the model: DataLoader workers read and decode the next batches while the network runs.

Each item is one ``jobs.Batch``, read and decoded in a worker process into ``ImageBatch``es (float pixels,
validated, what ``colorize`` and ``extract_features`` take), so the main process only runs the network
and writes results. Batches come back in order; on CUDA their pixels arrive in pinned memory, so the
copy to the GPU is a fast DMA. A file that cannot be read is not an error here: it comes back among
the batch's failures, with the reason.
"""
import functools
import os
import warnings
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
from PIL import Image

from .errors import SplitBrainError
from .images import ImageBatch, decode_image, load_batch, read_image
from .jobs import Batch, Job
from .shards import read_member

__all__ = ['Decoded', 'decode', 'decoded_batches', 'default_workers']

# Batches each worker decodes ahead of the one the model is on.
PREFETCH_BATCHES = 2


@dataclass
class Decoded:
    """A batch ready for the network: its decoded images with their jobs, and the jobs that failed."""
    batch: Batch
    images: List[ImageBatch]
    jobs: List[Job]                  # the job of each image, in order
    failures: List[Tuple[Job, str]]  # (job, the error: the image's name and why it could not be read)

    def pin_memory(self) -> 'Decoded':
        """Called by the DataLoader (``pin_memory=True``) on the main process's copy of the batch."""
        for image in self.images:
            image.pixels = image.pixels.pin_memory()
            image.alpha = image.alpha.pin_memory() if image.alpha is not None else None
        return self


def decode(batch: Batch) -> Decoded:
    """Read and decode every image of ``batch`` (in a worker, or here when there are none)."""
    decoded = Decoded(batch, [], [], [])
    for job in batch.jobs:
        try:
            if job.member is None:
                image = read_image(job.source)
            else:
                image = decode_image(read_member(job.source, job.member), job.name)
            decoded.images.append(load_batch(image, job.name))
            decoded.jobs.append(job)
        except SplitBrainError as e:
            decoded.failures.append((job, str(e)))
    return decoded


class _Decoding(torch.utils.data.Dataset):
    def __init__(self, batches: Sequence[Batch]) -> None:
        self.batches = list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Decoded:
        return decode(self.batches[index])


def _start_worker(max_pixels: Optional[int], worker_id: int) -> None:
    # A worker started by 'spawn' or 'forkserver' does not inherit what cli.main set: set it again.
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)


def default_workers(local_world_size: int = 1) -> int:
    """Worker processes per rank: this machine's cores shared among its ranks, at least 1, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    return max(1, min(8, cores // local_world_size))


def decoded_batches(batches: Sequence[Batch], workers: int, pin_memory: bool) -> Iterable[Decoded]:
    """``batches`` decoded, in order, by ``workers`` processes working ahead (0: here, one at a time)."""
    if not batches:
        return []
    return torch.utils.data.DataLoader(
        _Decoding(batches), batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin_memory,
        prefetch_factor=PREFETCH_BATCHES if workers else None,
        worker_init_fn=functools.partial(_start_worker, Image.MAX_IMAGE_PIXELS) if workers else None)
