"""Reading user images: paths, PIL images, numpy arrays and torch tensors in, validated pixels out.

Everything a user may hand to ``colorize`` is turned into one thing, an ``ImageBatch``: float pixels in
[0, 1] of shape (N, C, H, W) with C = 1 (grey) or 3 (RGB), the alpha channel kept aside, and a note of
what kind of object came in, so ``to_output`` can hand the result back as that same kind.

Anything unusable raises ``InputError`` naming the input and the problem ("<what>: expected X, got Y")
before a pixel reaches the network. Files and bytes (tar-shard members, uploads) go through one
defensive decoder, ``decode_image``: the same format allow-list, an explicit pixel limit checked before
decoding, and every decoder failure (empty, not an image, truncated, corrupt, too many pixels) an
``InputError`` subclass the service maps to a status code.
"""
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import CorruptImageError, EmptyImageError, InputError, TooManyPixelsError, UnsupportedFormatError

__all__ = ['DEFAULT_MAX_PIXELS', 'IMAGE_FORMATS', 'IMAGE_SUFFIXES', 'ImageBatch', 'MIN_SIDE', 'SAMPLE_PHOTO', 'decode_image',
           'greyscale_mask', 'load_batch', 'load_batches', 'sniff_format', 'to_output']

ImageInput = str | Path | Image.Image | np.ndarray | torch.Tensor

# A photo the package ships (CC0, see assets/README.md): something to try the model on.
SAMPLE_PHOTO = Path(__file__).parent / 'assets' / 'coffee.jpg'

# A side of 0 or 1 pixel has no neighbourhood for the network to read: refused.
MIN_SIDE = 2

# Pillow modes converted to one the array path understands (L, LA, RGB, RGBA, I;16, F). 'P' is
# handled apart: it becomes RGBA only when the palette has transparency.
_PIL_CONVERSIONS = {
    '1': 'L', 'PA': 'RGBA', 'La': 'LA', 'RGBa': 'RGBA', 'RGBX': 'RGB', 'CMYK': 'RGB', 'YCbCr': 'RGB',
    'LAB': 'RGB', 'HSV': 'RGB', 'I;16B': 'I;16', 'I;16L': 'I;16', 'I;16N': 'I;16',
}
_PIL_MODES_KEPT = ('L', 'LA', 'RGB', 'RGBA', 'I;16', 'I', 'F')
# Integer dtypes and the value that means "white".
_INTEGER_MAX = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
_TENSOR_INTEGER_MAX = {torch.uint8: 255, torch.uint16: 65535}
# Channels-last count -> (colour channels, has alpha).
_CHANNEL_LAYOUTS = {1: (1, False), 2: (1, True), 3: (3, False), 4: (3, True)}


@dataclass
class ImageBatch:
    """Validated pixels of one input, and how to give a result back in the input's own kind.

    Attributes:
        pixels: (N, C, H, W) float32 in [0, 1]; C = 1 (grey) or 3 (RGB).
        alpha: (N, 1, H, W) float32 in [0, 1], or None.
        name: how error messages and reports name the input (a path, ``image[2]``...).
        kind: 'pil' (PIL in, or a path), 'array' or 'tensor'.
        dtype: the numpy or torch dtype of an array or tensor input (results come back in it).
        device: the device of a tensor input.
        batched: a tensor input had a batch dimension (NCHW).
    """
    pixels: torch.Tensor
    alpha: torch.Tensor | None
    name: str
    kind: str
    dtype: Any = None
    device: torch.device | None = None
    batched: bool = False

    @property
    def size(self):
        return tuple(self.pixels.shape[-2:])


# --- the decoder of image data: files, tar-shard members, uploads ----------------------------------

# Leading bytes -> Pillow format: the formats decoded, from files and uploads alike. Pillow is allowed only
# the plugin the bytes claim (never the file name's), so crafted data cannot wander into a rarely used one.
_MAGIC = (
    (b'\xff\xd8\xff', 'JPEG'),
    (b'\x89PNG\r\n\x1a\n', 'PNG'),
    (b'GIF87a', 'GIF'),
    (b'GIF89a', 'GIF'),
    (b'BM', 'BMP'),
    (b'II*\x00', 'TIFF'),
    (b'MM\x00*', 'TIFF'),
    *((f'P{kind}'.encode(), 'PPM') for kind in range(1, 7)),  # PBM, PGM, PPM, ASCII and binary
)
IMAGE_FORMATS = ('JPEG', 'PNG', 'GIF', 'BMP', 'TIFF', 'WebP', 'PPM/PGM/PBM')
# File names taken for images, in a folder, a glob or a tar shard, by the CLI and by training alike.
IMAGE_SUFFIXES = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pnm'})
# Pillow's own default limit (89,478,485 pixels, about 9500 x 9500), unless the caller gives another.
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
_HEAD_BYTES = 16


def sniff_format(head: bytes) -> str | None:
    """The Pillow format the bytes start with (one of ``IMAGE_FORMATS``), or None."""
    if head[:4] == b'RIFF' and head[8:12] == b'WEBP':
        return 'WEBP'
    return next((fmt for magic, fmt in _MAGIC if head.startswith(magic)), None)


def decode_image(source: bytes | str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 name: str | None = None) -> Image.Image:
    """Decode an image file or an image's bytes fully, upright by its EXIF orientation.

    The one decoder of foreign image data (files, tar-shard members, uploads). The format is sniffed from
    the first bytes; the pixel count in the header is checked against ``max_pixels`` before a pixel is
    decoded, so a decompression bomb is refused without allocating its memory.

    Args:
        source: a path, or the bytes of an image file.
        max_pixels: the most pixels (width x height) accepted; None sets no limit of ours (Pillow's
            process-wide ``PIL.Image.MAX_IMAGE_PIXELS`` still refuses more than twice its value).
        name: how errors name the image (default: the path, or 'image' for bytes).
    Raises:
        EmptyImageError, UnsupportedFormatError, CorruptImageError, TooManyPixelsError (``InputError``s);
        ``InputError`` for a missing, unreadable or directory path, or a side under ``MIN_SIDE``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(source), name or 'image', max_pixels)
    path = Path(source)
    name = name or str(path)
    with _open_file(path, name) as stream:
        return _decode(stream, name, max_pixels)


def _open_file(path: Path, name: str) -> BinaryIO:
    if not path.exists():
        raise InputError(f'{name}: expected an image file, but no such file exists')
    if path.is_dir():
        raise InputError(f'{name}: expected an image file, got a directory')
    try:
        return open(path, 'rb')
    except OSError as e:  # permission denied, or a special file
        raise InputError(f'{name}: expected a readable file, got {type(e).__name__}: {e.strerror or e}') from e


def _decode(stream: BinaryIO, name: str, max_pixels: int | None) -> Image.Image:
    head = stream.read(_HEAD_BYTES)
    stream.seek(0)
    if not head:
        raise EmptyImageError(f'{name}: expected image data, got an empty (0-byte) file')
    fmt = sniff_format(head)
    if fmt is None:
        raise UnsupportedFormatError(f'{name}: expected {", ".join(IMAGE_FORMATS)} data, got bytes starting {head[:8]!r}')
    with _open_as(stream, fmt, name) as image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise TooManyPixelsError(
                f'{name}: image is {width}x{height} = {width * height:,} pixels, more than the limit of '
                f'{max_pixels:,} pixels (a decompression-bomb guard); {_HOW_TO_RAISE_LIMIT}')
        _check_side(name, width, height)
        try:
            image.load()
            # transpose() makes a new, fully decoded image, so closing the file afterwards is safe.
            return ImageOps.exif_transpose(image)
        except Exception as e:  # Pillow's decoders raise many types (OSError, ValueError, SyntaxError...)
            raise CorruptImageError(f'{name}: truncated or corrupt {fmt} data ({type(e).__name__}: {e})') from e


def _open_as(stream: BinaryIO, fmt: str, name: str) -> Image.Image:
    """Pillow's plugin for ``fmt`` alone on ``stream``: the header read, no pixel decoded yet."""
    try:
        with warnings.catch_warnings():
            # The pixel limit is ours (max_pixels): Pillow's warning below its own hard limit is only noise.
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            return Image.open(stream, formats=[fmt])
    except Image.DecompressionBombError as e:
        raise TooManyPixelsError(f'{name}: refused as a possible decompression bomb by Pillow ({e}); '
                                 f'{_HOW_TO_RAISE_LIMIT}') from e
    except Exception as e:  # a header cut short or inconsistent: OSError, SyntaxError, ValueError, struct.error...
        # (fuzzing found ValueError 'Invalid dimensions' from a TIFF header, tests/fuzz_corpus/image/crash-763ee7f7...)
        raise CorruptImageError(f'{name}: truncated or corrupt {fmt} data, its header unreadable '
                                f'({type(e).__name__}: {e})') from e


_HOW_TO_RAISE_LIMIT = ('if you trust the file, raise max_pixels (the CLI option --max-pixels); above twice '
                       "Pillow's PIL.Image.MAX_IMAGE_PIXELS, raise that too")


def _check_side(name: str, width: int, height: int) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InputError(f'{name}: expected width and height of at least {MIN_SIDE} pixels, got {width}x{height}')


# --- PIL images -----------------------------------------------------------------------------------

def _pil_to_array(image: Image.Image, name: str) -> np.ndarray:
    """A PIL image as an HxW or HxWxC array of the dtype its mode stores (uint8, uint16, float32)."""
    mode = image.mode
    if mode == 'P':
        target = 'RGBA' if 'transparency' in image.info else 'RGB'
    else:
        target = _PIL_CONVERSIONS.get(mode, mode)
    try:
        image = image.convert(target) if target != mode else image
    except ValueError as e:  # a conversion Pillow does not have
        raise InputError(f'{name}: cannot convert PIL mode {mode!r} to {target!r} ({e})') from e
    if image.mode not in _PIL_MODES_KEPT:
        raise InputError(f'{name}: expected a PIL image of mode L, LA, P, RGB, RGBA, CMYK or I;16, got {mode!r}')
    array = np.asarray(image)
    if image.mode == 'I':  # 32-bit integers: what older Pillow gives for 16-bit PNG
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise InputError(f'{name}: expected mode I values in [0, 65535], got [{array.min()}, {array.max()}]')
        array = array.astype(np.uint16)
    return array


# --- arrays and tensors ---------------------------------------------------------------------------

def _array_to_batch(array: np.ndarray, name: str, kind: str) -> ImageBatch:
    """An HxW or HxWxC array (C = 1..4) of uint8, uint16 or floats in [0, 1] -> a one-image batch."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in _CHANNEL_LAYOUTS):
        raise InputError(f'{name}: expected an HxW or HxWxC array with C = 1, 2, 3 or 4 (channels last), '
                         f'got shape {array.shape}')
    if not array.flags.writeable:  # e.g. np.asarray(PIL image): torch wants memory it may write
        array = array.copy()
    if array.ndim == 2:
        array = array[:, :, None]
    _check_side(name, array.shape[1], array.shape[0])
    if array.dtype in _INTEGER_MAX:
        # uint16 has no torch arithmetic everywhere: widen before the tensor is made.
        source = array.astype(np.int32) if array.dtype == np.uint16 else array
        tensor = torch.from_numpy(np.ascontiguousarray(source)).permute(2, 0, 1)[None]
        pixels = tensor.to(torch.float32) / _INTEGER_MAX[array.dtype]
    elif array.dtype.kind == 'f':
        pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].to(torch.float32)
        _check_unit_range(pixels, name)
    else:
        raise InputError(f'{name}: expected dtype uint8, uint16 or floating point in [0, 1], got {array.dtype}')
    batch = _split_alpha(pixels, name, kind)
    batch.dtype = array.dtype
    return batch


def _tensor_to_batch(tensor: torch.Tensor, name: str) -> ImageBatch:
    """A CHW or NCHW tensor (C = 1..4) of uint8 or floats in [0, 1] -> a batch, on the tensor's device."""
    if tensor.ndim not in (3, 4) or tensor.shape[-3] not in _CHANNEL_LAYOUTS:
        raise InputError(f'{name}: expected a CxHxW or NxCxHxW tensor with C = 1, 2, 3 or 4, '
                         f'got shape {tuple(tensor.shape)}')
    if tensor.ndim == 4 and tensor.shape[0] == 0:
        raise InputError(f'{name}: expected at least one image in the batch, got shape {tuple(tensor.shape)}')
    _check_side(name, tensor.shape[-1], tensor.shape[-2])
    batched = tensor.ndim == 4
    pixels = tensor if batched else tensor[None]
    if tensor.dtype in _TENSOR_INTEGER_MAX:
        pixels = pixels.to(torch.float32) / _TENSOR_INTEGER_MAX[tensor.dtype]
    elif tensor.is_floating_point():
        pixels = pixels.detach().to(torch.float32)
        _check_unit_range(pixels, name)
    else:
        raise InputError(f'{name}: expected dtype uint8 or floating point in [0, 1], got {tensor.dtype}')
    batch = _split_alpha(pixels, name, 'tensor')
    batch.dtype, batch.device, batch.batched = tensor.dtype, tensor.device, batched
    return batch


def _check_unit_range(pixels: torch.Tensor, name: str) -> None:
    # One pass: min and max propagate NaN, and an infinity is an extreme.
    low, high = (value.item() for value in torch.aminmax(pixels))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f'{name}: expected finite values in [0, 1], got NaN or infinity')
    if low < 0 or high > 1:
        raise InputError(f'{name}: expected values in [0, 1] (floats are not scaled), got min {low:g}, max {high:g}')


def _split_alpha(pixels: torch.Tensor, name: str, kind: str) -> ImageBatch:
    colour, has_alpha = _CHANNEL_LAYOUTS[pixels.shape[1]]
    return ImageBatch(pixels[:, :colour].contiguous(), pixels[:, colour:].contiguous() if has_alpha else None,
                      name, kind)


# --- any input ------------------------------------------------------------------------------------

def load_batch(image: Any, name: str = 'image') -> ImageBatch:
    """Validate one input of any supported kind (see module doc) and return its pixels as a batch.

    An ``ImageBatch`` (what this function returned earlier, e.g. in a DataLoader worker) is taken as it is.
    """
    if isinstance(image, ImageBatch):
        return image
    if isinstance(image, (str, Path)):  # Pillow's default pixel limit: decode a larger trusted file with decode_image
        return _array_to_batch(_pil_to_array(decode_image(image), str(image)), str(image), 'pil')
    if isinstance(image, Image.Image):
        _check_side(name, *image.size)
        return _array_to_batch(_pil_to_array(image, name), name, 'pil')
    if isinstance(image, np.ndarray):
        return _array_to_batch(image, name, 'array')
    if isinstance(image, torch.Tensor):
        return _tensor_to_batch(image, name)
    raise InputError(f'{name}: expected a path, PIL image, numpy array or torch tensor, got {type(image).__name__}')


def load_batches(images: Any, start: int = 0) -> list[ImageBatch]:
    """One input or a list / tuple of them -> one ``ImageBatch`` each, named ``image[start + i]`` in a list
    (``start``: where the list sits in the caller's longer one)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError('images: expected at least one image, got an empty list')
        return [load_batch(image, str(image) if isinstance(image, (str, Path)) else f'image[{start + i}]')
                for i, image in enumerate(images)]
    return [load_batch(images, str(images) if isinstance(images, (str, Path)) else 'image')]


def to_output(pixels: torch.Tensor, like: ImageBatch) -> Any:
    """Result pixels (N, C, H, W) float in [0, 1], C = 1 or 3, handed back as the kind ``like`` came in.

    ``like``'s alpha is appended. PIL: an 8-bit image (L, LA, RGB, RGBA); array: HxWxC in the input's
    dtype, HxW for one channel (as numpy holds a grey image); tensor: the input's dtype, device and rank.
    """
    if like.alpha is not None:
        pixels = torch.cat([pixels, like.alpha.to(pixels.device)], dim=1)
    if like.kind == 'tensor':
        out = _quantize(pixels, _TENSOR_INTEGER_MAX.get(like.dtype), like.dtype).to(like.device)
        return out if like.batched else out[0]
    out = pixels[0].permute(1, 2, 0)
    if like.kind == 'pil':
        array = _quantize(out, 255, torch.uint8).cpu().numpy()
        # fromarray picks L, LA, RGB or RGBA from the channel count.
        return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    integer_max = _INTEGER_MAX.get(like.dtype)
    array = _quantize(out, integer_max, torch.int32 if integer_max else torch.float32).cpu().numpy()
    array = array.astype(like.dtype)
    return array[:, :, 0] if array.shape[2] == 1 else array


def _quantize(pixels: torch.Tensor, integer_max: int | None, dtype) -> torch.Tensor:
    """[0, 1] floats -> ``dtype``: rounded to 0..integer_max for integer outputs, else cast."""
    if integer_max is None:
        return pixels.to(dtype)
    # +0.5 then truncation rounds (values are >= 0) in one pass, cheaper than round().
    return (pixels * integer_max + 0.5).clamp_(0, integer_max).to(dtype)



def greyscale_mask(pixels: torch.Tensor) -> torch.Tensor:
    """Which images of a batch (N, C, H, W), any dtype, carry no colour: one channel, or R == G == B at every
    pixel. (N,) bool. A greyscale photo has no ab to predict or to learn from."""
    if pixels.shape[1] == 1:
        return torch.ones(pixels.shape[0], dtype=torch.bool, device=pixels.device)
    flat = pixels[:, :3].flatten(2)
    return ((flat[:, 0] == flat[:, 1]) & (flat[:, 1] == flat[:, 2])).all(1)
