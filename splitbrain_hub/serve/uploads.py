"""Result images -> bytes of the media type the client asked for.

Uploads are decoded by ``images.decode_image``, the package's one decoder of image data (format sniffed
from the bytes, pixel limit checked before decoding); ``errors.api_error`` gives its refusals their status.
"""
import io

from PIL import Image

__all__ = ['MEDIA_TYPES', 'choose_media_type', 'encode_image']

# Media type of a result -> (Pillow format, save options). PNG first: the default, and it keeps alpha.
MEDIA_TYPES = {
    'image/png': ('PNG', {'compress_level': 1}),  # fast: a large PNG at level 6 costs more than the model
    'image/jpeg': ('JPEG', {'quality': 92}),
}


def encode_image(image: Image.Image, media_type: str) -> bytes:
    """PNG (alpha kept) or JPEG (alpha dropped: JPEG has none) bytes of a result image."""
    fmt, options = MEDIA_TYPES[media_type]
    if fmt == 'JPEG' and image.mode in ('RGBA', 'LA'):
        image = image.convert(image.mode[:-1])
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def choose_media_type(accept: str | None) -> str:
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
