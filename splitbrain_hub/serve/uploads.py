"""Uploaded bytes -> a decoded PIL image, defensively; result images -> bytes of the media type asked for.

The format is sniffed from the first bytes, never taken from the filename or the declared content type,
and Pillow is only allowed the one decoder the bytes claim, so a crafted upload cannot wander into a
rarely used plugin. The pixel count is read from the header and checked against ``max_pixels`` before
a single pixel is decoded: a decompression bomb (a few KB of PNG declaring 40 000 x 40 000 pixels) is
refused without allocating its memory.
"""
import io
import warnings
from typing import Optional

from PIL import Image, ImageOps

from ..images import MIN_SIDE
from .errors import ApiError

__all__ = ['MEDIA_TYPES', 'choose_media_type', 'decode_image', 'encode_image', 'sniff_format']

# Leading bytes -> Pillow format name. A format is only accepted when its magic number matches.
_MAGIC = (
    (b'\xff\xd8\xff', 'JPEG'),
    (b'\x89PNG\r\n\x1a\n', 'PNG'),
    (b'GIF87a', 'GIF'),
    (b'GIF89a', 'GIF'),
    (b'BM', 'BMP'),
    (b'II*\x00', 'TIFF'),
    (b'MM\x00*', 'TIFF'),
)
# Media type of a result -> (Pillow format, save options). PNG first: the default, and it keeps alpha.
MEDIA_TYPES = {
    'image/png': ('PNG', {'compress_level': 1}),  # fast: a large PNG at level 6 costs more than the model
    'image/jpeg': ('JPEG', {'quality': 92}),
}


def sniff_format(data: bytes) -> Optional[str]:
    """The Pillow format the bytes start with, or None."""
    if data[:4] == b'RIFF' and data[8:12] == b'WEBP':
        return 'WEBP'
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def decode_image(data: bytes, max_pixels: int, name: str = 'image') -> Image.Image:
    """Decode an upload fully, upright by its EXIF orientation; ``ApiError`` (4xx) on anything wrong."""
    if not data:
        raise ApiError(400, 'empty_upload', f'{name}: expected image bytes, got an empty upload')
    fmt = sniff_format(data)
    if fmt is None:
        raise ApiError(415, 'unsupported_media_type',
                       f'{name}: expected JPEG, PNG, GIF, BMP, TIFF or WebP data, got bytes starting {data[:8]!r}')
    try:
        with warnings.catch_warnings():
            # The pixel limit below is ours; Pillow's own warning about large images would only be noise.
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as e:
        raise ApiError(413, 'too_many_pixels', f'{name}: refused as a decompression bomb ({e})') from e
    except Exception as e:  # Pillow raises several types (OSError, SyntaxError, ValueError) on bad headers
        raise ApiError(400, 'corrupt_image', f'{name}: {fmt} data with an unreadable header ({e})') from e
    width, height = image.size
    if width * height > max_pixels:
        raise ApiError(413, 'too_many_pixels',
                       f'{name}: expected at most {max_pixels:,} pixels, got {width}x{height} = {width * height:,}')
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ApiError(422, 'invalid_image',
                       f'{name}: expected width and height of at least {MIN_SIDE} pixels, got {width}x{height}')
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except Exception as e:  # truncated or corrupt data surfaces from the decoder as various types
        raise ApiError(400, 'corrupt_image', f'{name}: truncated or corrupt {fmt} data ({type(e).__name__}: {e})') from e


def encode_image(image: Image.Image, media_type: str) -> bytes:
    """PNG (alpha kept) or JPEG (alpha dropped: JPEG has none) bytes of a result image."""
    fmt, options = MEDIA_TYPES[media_type]
    if fmt == 'JPEG' and image.mode in ('RGBA', 'LA'):
        image = image.convert(image.mode[:-1])
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def choose_media_type(accept: Optional[str]) -> str:
    """PNG unless the Accept header prefers JPEG (by q-value); unknown or absent types mean PNG."""
    best, best_q = 'image/png', 0.0
    for part in (accept or '').split(','):
        media_type, _, params = part.strip().partition(';')
        q = 1.0
        for param in params.split(';'):
            key, _, value = param.strip().partition('=')
            if key == 'q':
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media_type = media_type.strip().lower()
        if media_type in MEDIA_TYPES and (q > best_q or (q == best_q and media_type == 'image/png')):
            best, best_q = media_type, q
    return best
