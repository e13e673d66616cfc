"""Many images as one job: inputs -> jobs -> batches decoded ahead -> outputs, over one or several processes.

- ``shards.py``       WebDataset tar shards: brace patterns, one pass over the headers, members read by offset
- ``jobs.py``         inputs (files, folders, globs, lists, shards) -> jobs and where their outputs go
- ``loader.py``       DataLoader workers decoding the next batches while the network runs
- ``distributed.py``  the ``torchrun`` rank, its device and share, the process group (also the trainer's)
- ``runner.py``       the batch runner of the CLI's image commands, and their exit codes

Imports ``images``, ``files``, ``ops`` and ``errors``; never the model or the inference functions (the
runner is handed what to do with each batch).
"""
from .distributed import Rank, every_rank, from_environment, local_device, process_group, share
from .jobs import Batch, Job, Layout, Part, batches_to_run, plan
from .loader import Decoded, decode, decoded_batches, default_workers
from .runner import EXIT_FAILED_INPUTS, EXIT_OK, EXIT_USAGE, rank_and_device, run_batches
from .shards import MAX_MEMBER_BYTES, Member, expand_braces, index, read_member

__all__ = ['Batch', 'Decoded', 'EXIT_FAILED_INPUTS', 'EXIT_OK', 'EXIT_USAGE', 'Job', 'Layout', 'MAX_MEMBER_BYTES',
           'Member', 'Part', 'Rank', 'batches_to_run', 'decode', 'decoded_batches', 'default_workers', 'every_rank',
           'expand_braces', 'from_environment', 'index', 'local_device', 'plan', 'process_group', 'rank_and_device',
           'read_member', 'run_batches', 'share']
