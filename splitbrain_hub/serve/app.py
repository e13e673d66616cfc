"""The FastAPI application: routes, the request guard, error answers, model loading and graceful drain.

Request path for ``POST /v1/colorize``: the guard (``RequestGuard``) refuses new work while draining,
counts the request as in flight and reads the body (bounded bytes and time) -> FastAPI parses the form
and checks the parameters -> ``images.decode_image`` sniffs and decodes the image on a worker thread ->
``MicroBatcher.submit`` waits for a shared forward pass -> the result is encoded on a worker thread.

The model loads in the background after start-up: ``/healthz`` answers at once, ``/readyz`` only once
the model is in memory. On SIGTERM the server stops being ready and answers new requests 503, waits for
the in-flight ones (at most ``drain_timeout_s``), and only then lets uvicorn close the socket and exit.
"""
import asyncio
import logging
import os
import signal
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from safetensors.torch import save as safetensors_bytes
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import SplitBrainError
from ..images import IMAGE_FORMATS, decode_image
from ..inference import FEATURE_LAYERS, TEMPERATURE_RANGE
from ..ops.bins import DEFAULT_TEMPERATURE
from ..ops.upsample import DEFAULT_UPSAMPLE, UPSAMPLERS
from ..prediction import SIZE_RANGE
from ..version import __version__
from .batcher import MicroBatcher, QueueFull
from .config import ServeConfig
from .engine import Engine, batch_key
from .errors import ApiError, refused_image, responses
from .uploads import MEDIA_TYPES, choose_media_type, encode_image

__all__ = ['create_app']

_logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / 'static'
# Probes answer during a drain too: a load balancer must see readyz turn 503, not a refused connection.
_PROBES = ('/healthz', '/readyz')
RETRY_AFTER_S = '1'
_SHUTTING_DOWN = ApiError(503, 'shutting_down', 'the server is shutting down; retry on another instance',
                          {'Retry-After': RETRY_AFTER_S, 'Connection': 'close'})


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse({'error': error.error, 'detail': error.detail}, status_code=error.status, headers=error.headers)


class ServiceState:
    """What the routes share: settings, the engine once loaded, the batcher, drain bookkeeping."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self.batcher: MicroBatcher | None = None
        self.draining = False
        self.in_flight = 0

    def require_engine(self) -> Engine:
        """The engine, or 503 while it loads. (New requests during a drain never get here: see ``RequestGuard``.)"""
        if self.engine is None:
            detail = f'the model failed to load: {self.load_error}' if self.load_error else 'the model is still loading'
            raise ApiError(503, 'not_ready', detail, {'Retry-After': RETRY_AFTER_S})
        return self.engine


class RequestGuard:
    """Pure ASGI middleware: drain refusal, in-flight count, and a bounded, timed read of the body.

    The body is read here, before any parsing, so an oversized or endless upload is cut off at
    ``max_upload_bytes`` (or at ``Content-Length`` if that already says too much) and a slow one at
    ``request_timeout_s``; the app then sees the buffered body as if it came from the socket.
    """

    def __init__(self, app, state: ServiceState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        if self.state.draining and scope['path'] not in _PROBES:
            return await _error_response(_SHUTTING_DOWN)(scope, receive, send)
        self.state.in_flight += 1
        try:
            try:
                body = await asyncio.wait_for(self._read_body(scope, receive), self.state.config.request_timeout_s)
            except asyncio.TimeoutError:
                body = ApiError(408, 'timeout', f'the request body did not arrive within '
                                                f'{self.state.config.request_timeout_s:g} s', {'Connection': 'close'})
            if isinstance(body, ApiError):
                return await _error_response(body)(scope, receive, send)
            if body is None:  # the client went away
                return
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.state.in_flight -= 1

    async def _read_body(self, scope, receive):
        limit = self.state.config.max_upload_bytes
        too_large = ApiError(413, 'upload_too_large', f'request body: expected at most {limit:,} bytes',
                             {'Connection': 'close'})
        declared = dict(scope['headers']).get(b'content-length')
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message['type'] == 'http.disconnect':
                return None
            chunk = message.get('body', b'')
            size += len(chunk)
            if size > limit:
                return too_large
            chunks.append(chunk)
            if not message.get('more_body', False):
                return b''.join(chunks)


def _replay(body: bytes, receive):
    """An ASGI ``receive`` that hands over ``body`` once, then defers to the real one (disconnects)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {'type': 'http.request', 'body': body, 'more_body': False}
        return await receive()
    return replay


def _install_drain_on_sigterm(state: ServiceState) -> None:
    """On SIGTERM: drain (see module doc), then hand the signal to whoever had it (uvicorn)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals can only be handled on the main thread (e.g. not under a test client)
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def hand_over(signum: int) -> None:
        if callable(previous):
            previous(signum, None)
        else:  # no Python handler before us: restore it and let the signal do what it does by default
            signal.signal(signal.SIGTERM, previous)
            os.kill(os.getpid(), signum)

    async def drain_then_exit(signum: int) -> None:
        deadline = loop.time() + state.config.drain_timeout_s
        while state.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.02)
        _logger.info('drained (%d requests still in flight); shutting down', state.in_flight)
        hand_over(signum)

    def on_sigterm(signum, frame) -> None:
        if state.draining:  # a second SIGTERM: stop waiting
            hand_over(signum)
            return
        state.draining = True
        _logger.info('SIGTERM: not ready any more; finishing %d in-flight requests', state.in_flight)
        loop.call_soon_threadsafe(lambda: loop.create_task(drain_then_exit(signum)))

    signal.signal(signal.SIGTERM, on_sigterm)


async def _load_engine(state: ServiceState) -> None:
    try:
        state.engine = await asyncio.to_thread(Engine, state.config.weights, state.config.device)
        _logger.info('model ready on %s (weights %s)', state.engine.device, state.engine.weights_file)
    except Exception as e:  # WeightsError, a bad device, ...: reported by /readyz and /healthz
        state.load_error = f'{type(e).__name__}: {e}'
        _logger.error('the model failed to load: %s', state.load_error)


# --- schema models --------------------------------------------------------------------------------

class Health(BaseModel):
    status: str


class Info(BaseModel):
    version: str
    architecture: str
    weights: str
    weights_sha256: str
    device: str
    input_size: list[int]
    ab_bins: int
    limits: dict[str, Any]


_IMAGE_RESPONSE = {200: {'content': {media_type: {} for media_type in MEDIA_TYPES},
                         'description': "the result at the upload's full resolution: PNG (alpha kept) "
                                        'or JPEG if the Accept header prefers image/jpeg'}}
_PREDICT_ERRORS = ('empty_upload', 'corrupt_image', 'timeout', 'upload_too_large', 'too_many_pixels',
                   'unsupported_media_type', 'invalid_request', 'invalid_image', 'overloaded', 'not_ready',
                   'shutting_down', 'inference_timeout')


def _lifespan(state: ServiceState):
    """Start-up: the batcher, the model loading in the background, drain on SIGTERM; shut-down: stop both."""
    config = state.config

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher = MicroBatcher(lambda key, images: state.engine.run_batch(key, images), config.max_batch,
                                     config.max_wait_ms / 1000, config.max_queue)
        state.batcher.start()
        loader = asyncio.create_task(_load_engine(state))
        _install_drain_on_sigterm(state)
        yield
        loader.cancel()
        await state.batcher.stop()
    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every answer that is not a result is ``{"error": <code>, "detail": <text>}`` (see errors.py)."""
    @app.exception_handler(ApiError)
    async def refusal(request: Request, error: ApiError):
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        problems = '; '.join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        return _error_response(ApiError(422, 'invalid_request', problems or 'invalid request'))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = {404: 'not_found', 405: 'method_not_allowed'}.get(error.status_code, 'invalid_request')
        return _error_response(ApiError(error.status_code, code, str(error.detail), dict(error.headers or {})))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        _logger.exception('unexpected error on %s %s', request.method, request.url.path)
        return _error_response(ApiError(500, 'internal_error', 'an internal error; it has been logged'))


async def _predict(state: ServiceState, image: UploadFile, key) -> Any:
    """Decode the upload on a worker thread, then wait for its share of a batched forward pass."""
    config = state.config
    state.require_engine()
    data = await image.read()
    try:
        decoded = await run_in_threadpool(decode_image, data, config.max_pixels, 'image')
    except SplitBrainError as e:
        raise refused_image(e) from e
    try:
        return await asyncio.wait_for(state.batcher.submit(key, decoded), config.request_timeout_s)
    except QueueFull as e:
        raise ApiError(503, 'overloaded', f'too busy: {e}', {'Retry-After': RETRY_AFTER_S}) from e
    except asyncio.TimeoutError as e:
        raise ApiError(504, 'inference_timeout', f'no result within {config.request_timeout_s:g} s; retry later') from e
    except SplitBrainError as e:  # the model cannot take this image (mode, values...)
        raise refused_image(e) from e


async def _image_answer(request: Request, result) -> Response:
    media_type = choose_media_type(request.headers.get('accept'))
    body = await run_in_threadpool(encode_image, result.value, media_type)
    return Response(body, media_type=media_type, headers={'X-Batch-Size': str(result.batch_size)})


_IMAGE_FIELD = File(..., description=f'the photo: {", ".join(IMAGE_FORMATS)} (sniffed from the bytes)')
_UPSAMPLE_FIELD = Form(DEFAULT_UPSAMPLE, description='how the coarse colour grid reaches full resolution: guided '
                                                     "follows the edges of the photo's lightness, bilinear blurs "
                                                     'colour across them')


def _temperature_field():
    low, high = TEMPERATURE_RANGE
    return Form(DEFAULT_TEMPERATURE, ge=low, le=high, allow_inf_nan=False,
                description='annealed-mean temperature: lower is more vivid, higher more sober')


def _size_field(config: ServeConfig):
    return Form(None, ge=SIZE_RANGE[0], le=min(SIZE_RANGE[1], config.max_size),
                description="network input side in pixels (default: the model's own)")


def _add_model_routes(app: FastAPI, state: ServiceState) -> None:
    """/v1/colorize, /v1/lightness, /v1/features: an upload in, the model's answer out."""
    predict_responses = {**_IMAGE_RESPONSE, **responses(*_PREDICT_ERRORS)}

    @app.post('/v1/colorize', response_class=Response, responses=predict_responses, tags=['model'])
    async def colorize_route(request: Request, image: UploadFile = _IMAGE_FIELD,
                             temperature: float = _temperature_field(), size: int | None = _size_field(state.config),
                             upsample: Literal[tuple(UPSAMPLERS)] = _UPSAMPLE_FIELD):
        """Colorize a photo from its lightness alone, at its full resolution (alpha kept in PNG)."""
        key = batch_key('colorize', temperature=temperature, size=size, upsample=upsample)
        return await _image_answer(request, await _predict(state, image, key))

    @app.post('/v1/lightness', response_class=Response, responses=predict_responses, tags=['model'])
    async def lightness_route(request: Request, image: UploadFile = _IMAGE_FIELD,
                              temperature: float = _temperature_field(),
                              size: int | None = _size_field(state.config)):
        """Predict the lightness of a photo from its colour alone: a greyscale image at full resolution."""
        key = batch_key('lightness', temperature=temperature, size=size)
        return await _image_answer(request, await _predict(state, image, key))

    @app.post('/v1/features', response_class=Response, tags=['model'], responses={
        200: {'content': {'application/octet-stream': {}},
              'description': 'a safetensors file: one float32 tensor (C, h, w) per layer, named by the layer'},
        **responses(*_PREDICT_ERRORS)})
    async def features_route(
            image: UploadFile = _IMAGE_FIELD,
            layers: str = Query('conv5', pattern=rf"^({'|'.join(FEATURE_LAYERS)})(,({'|'.join(FEATURE_LAYERS)}))*$",
                                description='comma-separated layers, e.g. conv1,conv5'),
            pool: int | None = Query(None, ge=1, le=64, description='resize each map to pool x pool'),
            size: int | None = _size_field(state.config)):
        """Frozen conv features of both halves (concatenated), as the paper's linear probes read them."""
        names = list(dict.fromkeys(layers.split(',')))
        result = await _predict(state, image, batch_key('features', layers=names, pool=pool, size=size))
        body = await run_in_threadpool(safetensors_bytes, result.value)
        return Response(body, media_type='application/octet-stream', headers={'X-Batch-Size': str(result.batch_size)})


def _add_service_routes(app: FastAPI, state: ServiceState) -> None:
    """/v1/info, the probes /healthz and /readyz, and the web page."""
    @app.get('/v1/info', response_model=Info, responses=responses('not_ready', 'shutting_down'), tags=['service'])
    async def info():
        """Version, weights and their sha256, device, network input size, number of ab bins, limits."""
        limits = {name: getattr(state.config, name) for name in (
            'max_upload_bytes', 'max_pixels', 'max_batch', 'max_wait_ms', 'max_queue', 'max_size',
            'request_timeout_s')}
        return {**state.require_engine().info(), 'limits': limits}

    @app.get('/healthz', response_model=Health, responses=responses('not_ready'), tags=['service'])
    async def healthz():
        """The process is up (200 while the model loads); 503 only if the model failed to load."""
        if state.load_error:
            state.require_engine()
        return {'status': 'ok'}

    @app.get('/readyz', response_model=Health, responses=responses('not_ready', 'shutting_down'), tags=['service'])
    async def readyz():
        """200 once the model is loaded and the server is not draining; 503 otherwise."""
        if state.draining:
            raise _SHUTTING_DOWN
        state.require_engine()
        return {'status': 'ready'}

    @app.get('/', include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / 'index.html')


def create_app(config: ServeConfig) -> FastAPI:
    """The service for ``config``: routes, error answers, the request guard; the model loads once it starts."""
    state = ServiceState(config)
    app = FastAPI(title='splitbrain-hub', version=__version__, lifespan=_lifespan(state),
                  description='Colorize photos, predict lightness and extract features with the split-brain '
                              'autoencoder. Every error is JSON: `{"error": <code>, "detail": <text>}`.')
    app.add_middleware(RequestGuard, state=state)
    app.mount('/static', StaticFiles(directory=STATIC_DIR), name='static')
    _add_error_handlers(app)
    _add_model_routes(app, state)
    _add_service_routes(app, state)
    app.state.service = state
    return app
