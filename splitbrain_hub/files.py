"""Writing files so that a killed process never leaves half of one: write a temporary file, then rename it.

Used for everything the package and the trainer write that a rerun or a reader may find: weights,
config.json, CLI outputs, checkpoints, cached features.
"""
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ['atomic_write']


@functools.cache
def _umask() -> int:
    """The process's umask, read on the first write (not at import): reading it means setting it, so it is
    set straight back."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp_path)`` then rename over ``path``: a killed process never leaves half a file.

    The temporary file is ``.<name>.<random>.tmp`` next to ``path`` and gets the permissions of an
    ordinary new file (mkstemp's are owner-only).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
