"""Decoding ahead of the model: DataLoader workers read and decode the next batches while the network runs.

Each item is one ``jobs.Batch``, read and decoded in a worker process into ``ImageBatch``es (float pixels,
validated, what ``colorize`` and ``extract_features`` take), so the main process only runs the network
and writes results. Batches come back in order; on CUDA their pixels arrive in pinned memory, so the
copy to the GPU is a fast DMA. A file that cannot be read is not an error here: it comes back among
the batch's failures, with the reason.
"""
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from ..errors import SplitBrainError
from ..images import DEFAULT_MAX_PIXELS, ImageBatch, decode_image, load_batch
from .jobs import Batch, Job
from .shards import read_member

__all__ = ['Decoded', 'decode', 'decoded_batches', 'default_workers']

# Batches each worker decodes ahead of the one the model is on.
PREFETCH_BATCHES = 2


@dataclass
class Decoded:
    """A batch ready for the network: its decoded images with their jobs, and the jobs that failed."""
    batch: Batch
    images: list[ImageBatch]
    jobs: list[Job]                  # the job of each image, in order
    failures: list[tuple[Job, str]]  # (job, the error: the image's name and why it could not be read)

    def pin_memory(self) -> 'Decoded':
        """Called by the DataLoader (``pin_memory=True``) on the main process's copy of the batch."""
        for image in self.images:
            image.pixels = image.pixels.pin_memory()
            image.alpha = image.alpha.pin_memory() if image.alpha is not None else None
        return self


def decode(batch: Batch, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Decoded:
    """Read and decode every image of ``batch`` (in a worker, or here when there are none); an image of
    more than ``max_pixels`` pixels fails."""
    decoded = Decoded(batch, [], [], [])
    for job in batch.jobs:
        try:
            source = job.source if job.member is None else read_member(job.source, job.member)
            image = decode_image(source, max_pixels, job.name)
            decoded.images.append(load_batch(image, job.name))
            decoded.jobs.append(job)
        except SplitBrainError as e:
            decoded.failures.append((job, str(e)))
    return decoded


class _Decoding(torch.utils.data.Dataset):
    def __init__(self, batches: Sequence[Batch], max_pixels: int | None) -> None:
        self.batches, self.max_pixels = list(batches), max_pixels

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Decoded:
        return decode(self.batches[index], self.max_pixels)


def default_workers(local_world_size: int = 1) -> int:
    """Worker processes per rank: this machine's cores shared among its ranks, at least 1, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    return max(1, min(8, cores // local_world_size))


def decoded_batches(batches: Sequence[Batch], workers: int, pin_memory: bool,
                    max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterable[Decoded]:
    """``batches`` decoded (images of more than ``max_pixels`` pixels fail), in order, by ``workers`` processes
    working ahead (0: here, one at a time)."""
    if not batches:
        return []
    return torch.utils.data.DataLoader(
        _Decoding(batches, max_pixels), batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin_memory,
        prefetch_factor=PREFETCH_BATCHES if workers else None)
