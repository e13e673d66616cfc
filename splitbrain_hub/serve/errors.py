"""The service's error answers: one exception type, one JSON body, one table of documented responses.

Every refusal is an ``ApiError`` with an HTTP status and a stable machine-readable ``error`` code; the
app turns it into ``{"error": <code>, "detail": <what was wrong, for a human>}``. Nothing else ever
reaches a client: unexpected exceptions become a bare ``internal_error`` without a stack trace.
"""

from pydantic import BaseModel

from ..errors import (
    CorruptImageError,
    EmptyImageError,
    InputError,
    SplitBrainError,
    TooManyPixelsError,
    UnsupportedFormatError,
)

__all__ = ['ApiError', 'ErrorBody', 'ERROR_CODES', 'INPUT_ERROR_CODES', 'refused_image', 'responses']


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer."""
    error: str
    detail: str


class ApiError(Exception):
    """A request the service refuses: ``status``, ``error`` (a code from ``ERROR_CODES``) and ``detail``."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}


# code -> (status, when). The OpenAPI schema documents these, so clients can rely on them.
ERROR_CODES = {
    'empty_upload': (400, 'the image part has no bytes'),
    'corrupt_image': (400, 'the data starts like an image but is truncated or corrupt'),
    'not_found': (404, 'no such path'),
    'method_not_allowed': (405, 'the path does not take this method'),
    'timeout': (408, 'the upload did not arrive within the request timeout'),
    'upload_too_large': (413, 'more bytes than the upload limit'),
    'too_many_pixels': (413, 'more pixels than the pixel limit (decompression-bomb guard)'),
    'unsupported_media_type': (415, 'the bytes are not an image format the service reads'),
    'invalid_request': (422, 'a missing or malformed field or parameter'),
    'invalid_image': (422, 'an image the model cannot take (too small, unsupported mode...)'),
    'internal_error': (500, 'a bug: reported without details'),
    'overloaded': (503, 'the queue is full; retry after Retry-After seconds'),
    'not_ready': (503, 'the model is still loading'),
    'shutting_down': (503, 'the server is draining before exit'),
    'inference_timeout': (504, 'the image waited and ran longer than the request timeout'),
}


# The package's refusals of an image -> error codes; any other refusal is 'invalid_image'.
INPUT_ERROR_CODES: dict[type[InputError], str] = {
    EmptyImageError: 'empty_upload',
    UnsupportedFormatError: 'unsupported_media_type',
    CorruptImageError: 'corrupt_image',
    TooManyPixelsError: 'too_many_pixels',
}


def refused_image(error: SplitBrainError) -> ApiError:
    """The answer to an image the package refused (decoding it, or running the model on it)."""
    code = next((code for kind, code in INPUT_ERROR_CODES.items() if isinstance(error, kind)), 'invalid_image')
    return ApiError(ERROR_CODES[code][0], code, str(error))


def responses(*codes: str) -> dict[int, dict]:
    """OpenAPI ``responses`` for a route that can answer with these error codes."""
    by_status: dict[int, list] = {}
    for code in codes:
        status, when = ERROR_CODES[code]
        by_status.setdefault(status, []).append(f'`{code}`: {when}')
    return {status: {'model': ErrorBody, 'description': '; '.join(lines)} for status, lines in sorted(by_status.items())}
