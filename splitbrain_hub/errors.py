"""The package's exceptions: one hierarchy, so callers can catch ``SplitBrainError`` and nothing else.

Every error says what it was given and what it expected ("expected X, got Y") and names the input.
``InputError`` subclasses ``ValueError`` so code written against plain Python conventions still works.
"""


class SplitBrainError(Exception):
    """Base class of every error raised on purpose by ``splitbrain_hub``."""


class InputError(SplitBrainError, ValueError):
    """A user-supplied image, tensor, array or argument is unusable (wrong shape, dtype, range, file...)."""


class EmptyImageError(InputError):
    """Image data of zero bytes (an empty file or upload)."""


class UnsupportedFormatError(InputError):
    """Data that does not start like an image format the package decodes (``images.IMAGE_FORMATS``)."""


class CorruptImageError(InputError):
    """Data that starts like an image but is truncated or corrupt."""


class TooManyPixelsError(InputError):
    """An image whose header declares more pixels than the limit (a possible decompression bomb)."""


class WeightsError(SplitBrainError):
    """Pretrained weights are missing, unreadable, or do not match the model they are loaded into."""


class StorageError(SplitBrainError, OSError):
    """A file or folder could not be written: a full disk, a read-only file system, no permission, a file
    where a folder is expected. ``errno`` says which (an ``OSError``, so ``except OSError`` still catches it)."""

    def __init__(self, message: str, errno: int | None) -> None:
        super().__init__(message)
        self.errno = errno


class ConversionError(SplitBrainError):
    """A foreign checkpoint (e.g. a Caffe ``.caffemodel``) cannot be converted faithfully."""
