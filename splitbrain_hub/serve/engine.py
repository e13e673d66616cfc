"""The model behind the service: loaded once, and run on a batch of decoded images per call.

Each operation is a table row: the ``splitbrain_hub`` function it calls and how its batched result
splits into one result per image. A batch key is ``(operation, parameters)``, where the parameters are
the keyword arguments that change the forward pass; the micro-batcher only batches images with equal keys.
"""
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..hub import DEFAULT_ARCHITECTURE, sha256_of, weights_file
from ..inference import colorize, extract_features, load_model, predict_lightness
from ..ops.bins import ab_bin_count
from ..version import __version__

__all__ = ['Engine', 'OPERATIONS', 'batch_key']


@dataclass(frozen=True)
class Operation:
    run: Callable[..., Any]
    per_image: Callable[[Any, int], list[Any]]


def _features_per_image(features: dict[str, Any], count: int) -> list[dict[str, Any]]:
    return [{layer: maps[i].cpu().contiguous() for layer, maps in features.items()} for i in range(count)]


OPERATIONS: dict[str, Operation] = {
    'colorize': Operation(colorize, lambda results, count: results),
    'lightness': Operation(predict_lightness, lambda results, count: results),
    'features': Operation(extract_features, _features_per_image),
}


def batch_key(operation: str, **parameters: Any) -> Hashable:
    """What the batcher groups by: the operation and its parameters (lists become tuples)."""
    return operation, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in parameters.items()))


class Engine:
    """The loaded model and what ``/v1/info`` reports about it."""

    def __init__(self, weights: str | None, device: str | None) -> None:
        self.model = load_model(weights, device)
        self.device = str(next(self.model.parameters()).device)
        self.weights_file = weights_file(weights)
        self.weights_sha256 = sha256_of(self.weights_file)

    def run_batch(self, key: Hashable, images: Sequence[Image.Image]) -> list[Any]:
        """One forward pass over ``images`` (called on the batcher's thread)."""
        name, parameters = key
        operation = OPERATIONS[name]
        results = operation.run(list(images), model=self.model, **dict(parameters))
        return operation.per_image(results, len(images))

    def info(self) -> dict[str, Any]:
        cfg = self.model.pretrained_cfg or {}
        return {
            'version': __version__,
            'architecture': cfg.get('architecture', DEFAULT_ARCHITECTURE),
            'weights': self.weights_file.name,
            'weights_sha256': self.weights_sha256,
            'device': self.device,
            'input_size': list(cfg.get('input_size', (3, 227, 227))[-2:]),
            'ab_bins': ab_bin_count(),
        }
