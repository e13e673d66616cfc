"""Writing files so that a failure never leaves half of one, and says in words why it failed.

``atomic_write`` writes a temporary file, then renames it: a killed process or a full disk leaves the older
file (or none), never a partial one. Used for everything the package and the trainer write that a rerun or
a reader may find: weights, config.json, CLI outputs, checkpoints, cached features, results. Logs that
grow line by line (the trainer's ``metrics.jsonl``) use ``append_line``: a line is all there or not at all.

A failed write or folder creation is a ``StorageError`` naming the path and the cause ("no space left on
device", "read-only file system", "is a file, expected a folder"). Writers that report a full disk in
their own words (safetensors, ``torch.save``, ``np.save``) serialize to bytes first, so the bytes reach
the disk through ``atomic_write_bytes`` and the operating system's error number survives.
"""
import errno
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import StorageError

__all__ = ['append_line', 'atomic_write', 'atomic_write_bytes', 'cause', 'make_folder']

# Causes in the words a user searches for; other error numbers read as the C library words them.
_CAUSES = {
    errno.EEXIST: 'is a file, expected a folder',
    errno.ENOTDIR: 'is a file, expected a folder',
}


def cause(error: OSError) -> str:
    """Why ``error`` happened, in words: 'no space left on device', 'read-only file system', ..."""
    if error.errno in _CAUSES:
        return _CAUSES[error.errno]
    if error.errno is not None:
        text = os.strerror(error.errno)
        return text[:1].lower() + text[1:]
    return str(error) or type(error).__name__


@functools.cache
def _umask() -> int:
    """The process's umask, read on the first write (not at import): reading it means setting it, so it is
    set straight back."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_folder(path: Path) -> None:
    """``path`` and its parents, as ``mkdir -p``; a ``StorageError`` saying why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        # The failing component may be a parent: name it when the system does (a file where a folder goes).
        raise StorageError(f'cannot create folder {path}: {cause(e)}', e.errno) from e


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp_path)`` then rename over ``path``: a failure never leaves half a file or loses the old one.

    The temporary file is ``.<name>.<random>.tmp`` next to ``path`` and gets the permissions of an
    ordinary new file (mkstemp's are owner-only). An ``OSError`` becomes a ``StorageError`` naming ``path``.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    except OSError as e:
        raise StorageError(f'cannot write {path}: {cause(e)}', e.errno) from e
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError(f'cannot write {path}: {cause(e)}', e.errno) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """``atomic_write`` of bytes already in memory."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def append_line(path: Path, line: str) -> None:
    """Append ``line`` and a newline to ``path`` as one write; if it fails (a full disk), the file is cut back
    to where it was, so a reader never finds half a line."""
    data = (line + '\n').encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise StorageError(f'cannot write {path}: {cause(e)}', e.errno) from e
    try:
        size = os.fstat(fd).st_size
        try:
            rest = memoryview(data)
            while rest:  # a short write (the disk filled part way): the next one reports why
                rest = rest[os.write(fd, rest):]
        except OSError as e:
            os.ftruncate(fd, size)
            raise StorageError(f'cannot write {path}: {cause(e)}', e.errno) from e
    finally:
        os.close(fd)
