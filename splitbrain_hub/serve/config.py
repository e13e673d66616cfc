"""The service's settings, as data: one frozen dataclass the CLI fills and each worker process receives."""
from dataclasses import dataclass

__all__ = ['ServeConfig']


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``splitbrain-hub serve`` can be told; the defaults are the CLI's.

    Limits: ``max_upload_bytes`` bounds a request body; ``max_pixels`` bounds a decoded image (checked
    from the header before decoding, so a decompression bomb costs nothing); ``max_queue`` bounds the
    images waiting for the model (beyond it: 503 + Retry-After); ``request_timeout_s`` bounds the upload
    and, separately, the wait for the model; ``drain_timeout_s`` bounds how long SIGTERM waits for
    in-flight requests. Batching: at most ``max_batch`` images per forward pass, gathered for at most
    ``max_wait_ms`` after the first one arrives. ``max_size`` caps the ``size`` (network input side) a
    request may ask for, which bounds the memory of a batch.
    """
    host: str = '127.0.0.1'
    port: int = 8000
    workers: int = 1
    weights: str | None = None
    device: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_queue: int = 128
    max_size: int = 512
    request_timeout_s: float = 30.0
    drain_timeout_s: float = 30.0
