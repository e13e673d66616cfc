"""One job as several processes under ``torchrun``: which process this is, its device, its share, its group.

The CLI's batch commands and the trainer (``training/train.py``) both read their rank here.

PyTorch's launcher starts the processes and tells each, through environment variables, its ``RANK``
among ``WORLD_SIZE`` processes and its ``LOCAL_RANK`` among the ``LOCAL_WORLD_SIZE`` on its machine.
That is all the splitting needs: every rank lists the same inputs in the same order and takes the
parts ``RANK``, ``RANK + WORLD_SIZE``, ``RANK + 2 * WORLD_SIZE``... (``share``). The shares are
disjoint, together they are everything, and they depend only on the inputs and the world size, never
on timing or on which outputs exist already: a rerun hands every rank the same share, so each rank
checks its own outputs for skip-existing, and a rank that died is the only one with work left.

For the CLI, ``torch.distributed`` is used for one thing, gathering the ranks' counts at the end (gloo on
the CPU, NCCL on CUDA), so that rank 0 prints one summary and every rank returns the same exit status; the
trainer's DDP runs in the same ``process_group``.
Without torchrun's variables there is one rank and no process group: nothing changes.
"""
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch

from ..errors import InputError

__all__ = ['Rank', 'from_environment', 'share', 'local_device', 'process_group', 'every_rank']

T = TypeVar('T')
# A finished rank waits in ``every_rank`` for the slowest one, which may have hours of work left (a rerun
# leaves all the work to the rank that died): the collective may not time out before that.
WAIT_FOR_OTHER_RANKS = timedelta(days=7)


@dataclass(frozen=True)
class Rank:
    """This process's place in the job (one process: rank 0 of 1)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    def __str__(self) -> str:
        return f'rank {self.rank} of {self.world_size}'


def from_environment(environ: Mapping[str, str] = os.environ) -> Rank:
    """The rank torchrun gave this process, or ``Rank()`` when not started by torchrun.

    Raises:
        InputError: torchrun's variables are present but not consistent.
    """
    if 'WORLD_SIZE' not in environ:
        return Rank()
    values = {}
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE'):
        text = environ.get(name, '0' if name == 'LOCAL_RANK' else '1' if name == 'LOCAL_WORLD_SIZE' else '')
        try:
            values[name] = int(text)
        except ValueError:
            raise InputError(f'{name}: expected an integer (set by torchrun), got {text!r}') from None
    rank = Rank(values['RANK'], values['WORLD_SIZE'], values['LOCAL_RANK'], values['LOCAL_WORLD_SIZE'])
    if not (0 <= rank.rank < rank.world_size and 0 <= rank.local_rank < rank.local_world_size <= rank.world_size):
        raise InputError(f'torchrun variables: expected 0 <= RANK < WORLD_SIZE and 0 <= LOCAL_RANK < '
                         f'LOCAL_WORLD_SIZE <= WORLD_SIZE, got RANK={rank.rank}, WORLD_SIZE={rank.world_size}, '
                         f'LOCAL_RANK={rank.local_rank}, LOCAL_WORLD_SIZE={rank.local_world_size}')
    return rank


def share(parts: Sequence[T], rank: Rank) -> list[T]:
    """This rank's parts: every ``world_size``-th one, starting at its rank (round robin, so that each rank
    gets about as many of the early and of the late parts, whatever their sizes)."""
    return list(parts[rank.rank::rank.world_size])


def local_device(device: torch.device, rank: Rank) -> torch.device:
    """``device`` for this rank: a CUDA device without an index becomes this machine's GPU ``LOCAL_RANK``.

    Raises:
        InputError: this machine has fewer GPUs than processes.
    """
    if device.type != 'cuda' or device.index is not None or rank.world_size == 1:
        return device
    count = torch.cuda.device_count()
    if rank.local_rank >= count:
        raise InputError(f'LOCAL_RANK {rank.local_rank}: expected a GPU per process on this machine, got {count} GPUs; '
                         'start fewer processes (--nproc_per_node) or pass --device cpu')
    return torch.device('cuda', rank.local_rank)


@contextmanager
def process_group(rank: Rank, device: torch.device, timeout: timedelta | None = WAIT_FOR_OTHER_RANKS) -> Iterator[None]:
    """The process group (NCCL on CUDA, gloo on the CPU) while the job runs; none for a single process.

    ``timeout`` bounds a collective (None: torch's default, for a trainer whose ranks stay in step).
    """
    if rank.world_size == 1:
        yield
        return
    import torch.distributed as dist
    if device.type == 'cuda':
        torch.cuda.set_device(device)  # NCCL's tensors live on this rank's GPU
    dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo', timeout=timeout)
    try:
        yield
    finally:
        dist.destroy_process_group()


def every_rank(values: Sequence[float], rank: Rank, device: torch.device) -> list[list[float]]:
    """Each rank's ``values``, in rank order (waits until every rank has called it)."""
    if rank.world_size == 1:
        return [list(values)]
    import torch.distributed as dist
    mine = torch.tensor(values, dtype=torch.float64, device=device if device.type == 'cuda' else 'cpu')
    everyone = [torch.empty_like(mine) for _ in range(rank.world_size)]
    dist.all_gather(everyone, mine)
    return [row.tolist() for row in everyone]
