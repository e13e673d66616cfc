"""Writes small WebDataset-style tar shards for the tests (the CLI's and the distributed runs')."""
import io
import tarfile
from pathlib import Path


def write_shard(path: Path, members: dict[str, bytes]) -> Path:
    """A tar at ``path`` holding ``members`` (name -> bytes), in the given order."""
    with tarfile.open(path, 'w') as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
