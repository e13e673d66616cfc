"""Training images -> uint8 batches: WebDataset tar shards or an image folder.

The sample list is an index of (source, member, label): for tar shards the members found by one pass over
the tar headers (``splitbrain_hub.batch.shards``, the CLI's reader; no image is decoded), for a folder
the file paths with the class from the sub-folder name. Reading by offset gives, at no extra cost:

* a true global shuffle per epoch (``seed``, ``epoch``), not a shard shuffle plus a buffer;
* exact resume: the loader starts at any batch number, nothing before it is read;
* the DDP split: global batch ``b`` belongs to rank ``b % world_size``, and inside a rank to the
  DataLoader worker ``(b // world_size) % num_workers``, so every rank gets whole, equal batches.

Each sample's random-resized-crop and flip come from a generator seeded by (seed, epoch, sample
position), so the batches are the same whatever the number of workers or ranks. Decoding gives uint8
(3, S, S) tensors plus a ``colour`` flag (False for greyscale photos: ``images.greyscale_mask``);
colour conversion and target encoding happen batched on the device in the trainer.
"""
import glob
import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from splitbrain_hub.batch.shards import MAX_MEMBER_BYTES, Member, index, read_member
from splitbrain_hub.errors import InputError
from splitbrain_hub.images import IMAGE_SUFFIXES, greyscale_mask

__all__ = ['IMAGE_SUFFIXES', 'MAX_MEMBER_BYTES', 'BatchStream', 'Sample', 'build_index', 'make_loader', 'read_bytes',
           'shard_samples']


@dataclass(frozen=True)
class Sample:
    source: str              # tar file or image file
    member: Member | None    # the image inside ``source`` when that is a tar shard
    label: int


def shard_samples(path: str) -> list[Sample]:
    """Pairs ``<key>.<image>`` + ``<key>.cls`` of one shard, in tar order (the package's shard reader); the
    label is read here (tiny). A member above ``MAX_MEMBER_BYTES`` is refused now, not hours into a run."""
    members = index(Path(path), IMAGE_SUFFIXES | {'.cls'})
    labels = {m.key: int(read_member(Path(path), m)) for m in members if m.name.endswith('.cls')}
    images = [m for m in members if not m.name.endswith('.cls')]
    too_large = [m for m in images if m.size > MAX_MEMBER_BYTES]
    if too_large:
        raise InputError(f'{path}: member {too_large[0].name}: expected at most {MAX_MEMBER_BYTES} bytes, '
                         f'got {too_large[0].size}')
    return [Sample(path, member, labels.get(member.key, -1)) for member in images]


def _folder_samples(root: str) -> list[Sample]:
    """``root/<class>/.../<image>``: label = index of ``<class>`` among the sorted sub-folders."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    samples = []
    for label, name in enumerate(classes):
        for path in sorted(Path(root, name).rglob('*')):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(str(path), None, label))
    return samples


def build_index(data: str) -> list[Sample]:
    """``data``: a folder of class sub-folders, or comma-separated tar paths / glob patterns."""
    if os.path.isdir(data):
        samples = _folder_samples(data)
    else:
        paths = sorted({p for pattern in data.split(',') for p in (glob.glob(pattern) or [pattern])})
        missing = [p for p in paths if not os.path.isfile(p) or not p.endswith('.tar')]
        if missing:
            raise InputError(f'data: expected an image folder or existing .tar shards, got {missing}')
        samples = [s for p in paths for s in shard_samples(p)]
    if not samples:
        raise InputError(f'data: expected images in {data!r}, found none')
    return samples


def read_bytes(sample: Sample) -> bytes:
    if sample.member is None:
        return Path(sample.source).read_bytes()
    return read_member(Path(sample.source), sample.member)


def random_resized_crop(image: Image.Image, size: int, scale: tuple[float, float], generator: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """Inception-style crop (area fraction in ``scale``, aspect in ``ratio``) resized to size x size, then a
    random horizontal flip; all randomness from ``generator``."""
    width, height = image.size
    u = torch.rand(5, generator=generator).tolist()
    area = width * height * (scale[0] + (scale[1] - scale[0]) * u[0])
    aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
    w = min(width, max(1, round(math.sqrt(area * aspect))))
    h = min(height, max(1, round(math.sqrt(area / aspect))))
    left, top = int(u[2] * (width - w + 1)), int(u[3] * (height - h + 1))
    crop = image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    return crop.transpose(Image.FLIP_LEFT_RIGHT) if u[4] < 0.5 else crop


def decode(sample: Sample, size: int, scale: tuple[float, float], generator: torch.Generator):
    image = Image.open(io.BytesIO(read_bytes(sample)))
    image.draft('RGB', (size, size))  # JPEG: decode no larger than needed
    rgb = image.convert('RGB')
    grey = bool(greyscale_mask(torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None]))
    crop = random_resized_crop(rgb, size, scale, generator)
    return torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1), grey


class BatchStream(torch.utils.data.IterableDataset):
    """Yields this rank's (and this worker's) whole batches from ``start_batch`` on, epoch after epoch.

    Each item: ``(batch number, images uint8 (B, 3, S, S), labels int64 (B,), colour bool (B,))``.
    """

    def __init__(self, samples: Sequence[Sample], batch_size: int, input_size: int, scale: tuple[float, float],
                 seed: int, start_batch: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if len(samples) < batch_size * world_size:
            raise InputError(f'data: expected at least batch_size * world_size = {batch_size * world_size} '
                             f'images, got {len(samples)}')
        self.samples = list(samples)
        self.batch_size, self.input_size, self.scale = batch_size, input_size, tuple(scale)
        self.seed, self.start_batch, self.rank, self.world_size = seed, start_batch, rank, world_size
        # Global batches per epoch (the last partial one is dropped), rounded down to whole rank turns.
        self.batches_per_epoch = len(self.samples) // batch_size // world_size * world_size

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))

    def __iter__(self) -> Iterator:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # Global batch b (counted over all epochs) -> rank b % world; its local index among the rank's batches
        # -> worker. Start at this rank's first batch at or after start_batch (start_batch: a global count).
        first = local = -(-(self.start_batch - self.rank) // self.world_size)
        while True:
            global_batch = local * self.world_size + self.rank
            if (local - first) % workers == worker:  # the DataLoader polls workers 0, 1, ... in turn
                yield (global_batch, *self._batch(global_batch))
            local += 1

    def _batch(self, global_batch: int):
        epoch, index = divmod(global_batch, self.batches_per_epoch)
        order = self._order(epoch)
        images, labels, colour = [], [], []
        for position in range(index * self.batch_size, (index + 1) * self.batch_size):
            generator = torch.Generator().manual_seed(hash((self.seed, epoch, position)) & 0x7FFF_FFFF_FFFF_FFFF)
            sample = self.samples[order[position]]
            image, grey = decode(sample, self.input_size, self.scale, generator)
            images.append(image)
            labels.append(sample.label)
            colour.append(not grey)
        return torch.stack(images), torch.tensor(labels), torch.tensor(colour)


def make_loader(stream: BatchStream, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """Workers decode whole batches; the DataLoader hands them back in order (round robin over workers)."""
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
        persistent_workers=False, prefetch_factor=4 if num_workers else None)
