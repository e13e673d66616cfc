"""``splitbrain-hub serve``: its arguments and how it starts uvicorn (imported by ``cli.py``).

Only argparse here at import time: the web stack (FastAPI, uvicorn) is the optional ``serve`` extra and
is imported when the command runs, so the rest of the CLI works without it.
"""
import argparse
import copy
import dataclasses
import functools
import inspect
import os

from ..errors import SplitBrainError
from ..inference import load_model
from .config import ServeConfig

__all__ = ['add_arguments', 'run']

_DEFAULTS = ServeConfig()
# (option, type, help) for the tunable limits; the option name is the config field's.
_LIMITS = (
    ('max_upload_bytes', int, 'largest request body in bytes'),
    ('max_pixels', int, 'largest image in pixels (decompression-bomb guard)'),
    ('max_batch', int, 'most images per forward pass'),
    ('max_wait_ms', float, 'longest wait for more images to batch with'),
    ('max_queue', int, 'most images waiting; beyond it 503 + Retry-After'),
    ('max_size', int, 'largest network input side a request may ask for'),
    ('request_timeout_s', float, 'bound on receiving an upload, and on waiting for its result'),
    ('drain_timeout_s', float, 'how long SIGTERM waits for in-flight requests'),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--host', default=_DEFAULTS.host, help=f'address to listen on (default {_DEFAULTS.host})')
    parser.add_argument('--port', type=int, default=_DEFAULTS.port, help=f'default {_DEFAULTS.port}')
    parser.add_argument('--workers', type=int, default=_DEFAULTS.workers,
                        help='server processes, each with its own model copy (default 1)')
    parser.add_argument('--weights', metavar='PATH',
                        help='a save_pretrained folder or .safetensors file (default: the pretrained model)')
    parser.add_argument('--device', help='cpu, cuda, cuda:N or mps (default: cuda, then mps, then cpu)')
    for name, kind, text in _LIMITS:
        parser.add_argument('--' + name.replace('_', '-'), type=kind, default=getattr(_DEFAULTS, name),
                            help=f'{text} (default {getattr(_DEFAULTS, name)})')


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401  (checked here so the message below names the extra)
        import multipart  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise SplitBrainError(f"serve: needs the optional web stack ({e.name} is missing): "
                              "pip install 'splitbrain-hub[serve]'") from e
    config = ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)})
    if config.workers < 1:
        raise SplitBrainError(f'--workers: expected an integer >= 1, got {config.workers}')
    if config.weights is not None and not os.path.exists(config.weights):
        raise SplitBrainError(f'--weights {config.weights}: expected a save_pretrained folder or .safetensors file, '
                              'but it does not exist')
    # Refuse to start rather than serve garbage: a truncated, foreign or non-finite weights file is a
    # WeightsError here, before any worker starts (each worker then loads the file again, on its device).
    load_model(config.weights, 'cpu')
    _serve(config, uvicorn)
    return 0


def _serve(config: ServeConfig, uvicorn) -> None:
    """uvicorn with one app per worker process, each built by ``create_app(config)``.

    The factory and its settings are handed to uvicorn as one picklable object: each worker process
    receives them as it starts, nothing travels through the environment. ``uvicorn.run`` accepts only an
    import string for several workers, so its own supervisor (``Multiprocess``) is started here: it restarts
    a worker that dies (the others keep serving; the new one's ``/readyz`` is 503 until its model is loaded).

    Each worker reads the weights once, as it starts: a weights file replaced on disk while serving changes
    nothing until a restart (of the service, or of a worker the supervisor restarts, which reads the new file).
    """
    from uvicorn.supervisors import Multiprocess

    from .app import create_app
    # uvicorn's own log set-up, plus the package's logger (model loaded, draining) on the same handler.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config['loggers']['splitbrain_hub'] = {'handlers': ['default'], 'level': 'INFO', 'propagate': False}
    settings = uvicorn.Config(functools.partial(create_app, config), factory=True, host=config.host, port=config.port,
                              workers=config.workers, timeout_graceful_shutdown=config.drain_timeout_s,
                              log_level='info', log_config=log_config)
    server = uvicorn.Server(settings)
    if config.workers == 1:
        server.run()
        if not server.started:
            raise SplitBrainError(f'serve: the server did not start on {config.host}:{config.port} (see the log above)')
        return
    sockets = [settings.bind_socket()]
    # uvicorn < 0.36 takes the worker's entry point too; later versions build it from the config.
    takes_target = 'target' in inspect.signature(Multiprocess).parameters
    supervisor = Multiprocess(settings, target=server.run, sockets=sockets) if takes_target else \
        Multiprocess(settings, sockets=sockets)
    supervisor.run()
