"""Deploy without PyTorch: ONNX graphs, ``torch.export`` programs, and a static folder that colorizes in the browser.

The model's graphs (``GRAPHS``), each exported with a dynamic batch, height and width; the two predictions are
``prediction.HalfPrediction``, the same steps ``colorize`` and ``predict_lightness`` run:

- ``colorize``: RGB (N, 3, H, W) in [0, 1] and a scalar temperature -> ab (N, 2, h, w) on the conv5 grid, the
  annealed mean of the L half (the only half in the file);
- ``lightness``: RGB and a temperature -> L (N, 1, h, w) on the grid, from the ab half alone;
- ``features``: RGB -> conv1..conv5 of both halves (after ReLU, as ``extract_features`` gives them).

Around ``colorize``, the rest of ``splitbrain_hub.colorize`` is in the graph too (``PHOTO_GRAPHS``, no weights),
so a user needs neither torch nor colour maths of their own:

- ``prepare``: a photo's RGB at any size -> the network input: the photo's full-resolution L resized so its
  short side is the network size, aspect kept (antialiased bilinear, as ``colorize`` does), as grey RGB of that L;
- ``recombine``: the photo's RGB and the ``colorize`` ab -> the colorized RGB at the photo's size: the photo's
  own L with ab upsampled by the guided filter (``colorize``'s default ``upsample``).

``prepare`` -> ``colorize`` -> ``recombine`` is ``colorize(photo, amp='off')`` to float rounding. The browser
folder runs exactly these three graphs with onnxruntime-web.
"""
import copy
import io
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import Dim

from ..errors import InputError, SplitBrainError
from ..files import atomic_write
from ..models.splitbrain_alexnet import SplitBrainAlexNet
from ..ops.bins import DEFAULT_TEMPERATURE
from ..ops.color import lab_to_rgb_unchecked, rgb_to_lightness_unchecked
from ..ops.upsample import UPSAMPLERS
from ..prediction import (
    COLORIZE,
    LIGHTNESS,
    SIZE_RANGE,
    HalfPrediction,
    network_size,
    photo_network_size,
    photo_size_rule,
    recombine,
    resize,
)

__all__ = ['DEFAULT_OPSET', 'GRAPHS', 'OPSET_RANGE', 'PHOTO_GRAPHS', 'export_onnx', 'export_programs', 'export_web',
           'to_fp16']

GRAPHS = ('colorize', 'lightness', 'features')
PHOTO_GRAPHS = ('prepare', 'recombine')
# The lowest opset torch's ONNX exporter writes, and so the one most runtimes (onnxruntime-web included) run.
DEFAULT_OPSET = 18
OPSET_RANGE = (18, 23)
# A photo for prepare / recombine: any size the guided filter's grid fits in.
PHOTO_SIDE_RANGE = (2, 1 << 15)
WEB_ASSETS = Path(__file__).parent / 'webapp'
# onnxruntime-web's files the page needs: the wasm-only build, its loader and its WebAssembly; and its
# package.json, which names the version and the licence (MIT) next to them.
ORT_WEB_FILES = ('ort.wasm.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm', '../package.json')
# Where ``npm ci`` in the repository's web/ folder puts them (an editable install or a source checkout).
ORT_WEB_DIST = Path(__file__).resolve().parents[2] / 'web' / 'node_modules' / 'onnxruntime-web' / 'dist'


# --- the graphs as modules ------------------------------------------------------------------------

class Features(nn.Module):
    """RGB -> conv1..conv5 of both halves, concatenated (the model pruned past conv5: no fc, no heads)."""

    def __init__(self, model: SplitBrainAlexNet) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)
        self.model.prune_intermediate_layers(len(self.model.feature_info))

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_intermediates(rgb, intermediates_only=True))


class Prepare(nn.Module):
    """A photo -> the ``colorize`` graph's input: its full-resolution L resized to ``size``, as grey RGB.

    Grey of the resized L (a = b = 0) rather than the resized RGB, because ``colorize`` resizes L: the L half
    then sees the same L as in ``splitbrain_hub.colorize``.
    """

    def __init__(self, size_rule: int | tuple[int, int]) -> None:
        super().__init__()
        self.size_rule = size_rule  # as colorize's: a short side (aspect kept) or (height, width)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb (N, 3, H, W) in [0, 1] -> grey RGB (N, 3, h, w) in [0, 1], (h, w) = ``photo_network_size``."""
        size = photo_network_size(rgb.shape[-2], rgb.shape[-1], self.size_rule)
        lightness = resize(rgb_to_lightness_unchecked(rgb), size)
        return lab_to_rgb_unchecked(torch.cat([lightness, torch.zeros_like(lightness).expand(-1, 2, -1, -1)], dim=1))


class Recombine(nn.Module):
    """A photo and its predicted ab grid -> the colorized photo: its own L, ab upsampled by the guided filter."""

    def forward(self, rgb: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """rgb (N, 3, H, W) in [0, 1], ab (N, 2, h, w) in Lab units -> RGB (N, 3, H, W) in [0, 1]."""
        lab = torch.cat([rgb_to_lightness_unchecked(rgb), torch.zeros_like(rgb[:, 1:])], dim=1)
        return recombine(lab, ab, COLORIZE, UPSAMPLERS['guided'])


# --- what each graph is exported with -------------------------------------------------------------

@dataclass(frozen=True)
class Graph:
    """A module with example inputs, the names its ONNX inputs and outputs get, and its dynamic dimensions."""
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_shapes: tuple[dict[int, Dim] | None, ...]


def _image_dims(low: int, high: int) -> dict[int, Dim]:
    return {0: Dim('batch', min=1, max=1 << 16), 2: Dim('height', min=low, max=high),
            3: Dim('width', min=low, max=high)}


def _model_graphs(model: SplitBrainAlexNet) -> dict[str, Graph]:
    """``GRAPHS``: example input at the model's size (batch 2, width + 16: no dimension is 1 or equal to another)."""
    height, width = network_size(model, None)
    rgb = torch.rand(2, 3, height, width + 16)
    temperature = torch.tensor(DEFAULT_TEMPERATURE)
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    dims = _image_dims(max(SIZE_RANGE[0], cfg.get('min_input_size', (3, 0, 0))[-1]), SIZE_RANGE[1])
    return {
        'colorize': Graph(HalfPrediction(model, COLORIZE), (rgb, temperature), ('rgb', 'temperature'), ('ab',),
                          (dims, None)),
        'lightness': Graph(HalfPrediction(model, LIGHTNESS), (rgb, temperature), ('rgb', 'temperature'),
                           ('lightness',), (dims, None)),
        'features': Graph(Features(model), (rgb,), ('rgb',), tuple(info['module'] for info in model.feature_info),
                          (dims,)),
    }


def _photo_graphs(model: SplitBrainAlexNet) -> dict[str, Graph]:
    """``PHOTO_GRAPHS``: example photo larger than the network input, ab on the grid ``colorize`` gives it."""
    size = network_size(model, None)
    photo = torch.rand(2, 3, 2 * size[0] + 3, 2 * size[1] + 5)
    with torch.no_grad():
        ab = HalfPrediction(model, COLORIZE)(torch.rand(2, 3, *size), torch.tensor(DEFAULT_TEMPERATURE))
    photo_dims = _image_dims(*PHOTO_SIDE_RANGE)
    grid_dims = {0: photo_dims[0], 2: Dim('grid_height', min=1, max=SIZE_RANGE[1]),
                 3: Dim('grid_width', min=1, max=SIZE_RANGE[1])}
    return {
        'prepare': Graph(Prepare(photo_size_rule(model, None)), (photo,), ('photo',), ('rgb',), (photo_dims,)),
        'recombine': Graph(Recombine(), (photo, ab), ('photo', 'ab'), ('rgb',), (photo_dims, grid_dims)),
    }


def _fp32_cpu_eval(model: nn.Module) -> SplitBrainAlexNet:
    """A float32 CPU copy in eval mode (the caller's model is left as it is)."""
    if not isinstance(model, SplitBrainAlexNet):
        raise InputError(f'model: expected a SplitBrainAlexNet, got {type(model).__name__}')
    return copy.deepcopy(model).float().cpu().eval()


def _export_program(graph: Graph) -> torch.export.ExportedProgram:
    with torch.no_grad():
        return torch.export.export(graph.module.eval(), graph.inputs, dynamic_shapes=graph.dynamic_shapes)


# --- writers --------------------------------------------------------------------------------------

def _check_opset(opset: Any) -> int:
    low, high = OPSET_RANGE
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise InputError(f'opset: expected an int in [{low}, {high}], got {opset!r}')
    return opset


def _output_dir(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f'out_dir: expected a folder, got a file {out_dir}')
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _save_onnx(graph: Graph, path: Path, opset: int) -> None:
    program = torch.onnx.export(_export_program(graph), (), input_names=list(graph.input_names),
                                output_names=list(graph.output_names), opset_version=opset, dynamo=True,
                                verbose=False)
    # One self-contained file: the largest graph (the colorizer, about 60 MB) is far below protobuf's 2 GB.
    atomic_write(path, lambda tmp: program.save(tmp, external_data=False))


def _save_program(graph: Graph, path: Path) -> None:
    # Through a buffer: torch.export.save expects a file name ending in .pt2, and the temporary file's does not.
    buffer = io.BytesIO()
    torch.export.save(_export_program(graph), buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def _check_onnx_installed() -> None:
    """torch's ONNX exporter needs onnx and onnxscript, which the package does not require: say how to get them
    before any work is done."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise SplitBrainError(f"ONNX export: expected onnx and onnxscript installed (pip install "
                              f"'splitbrain-hub[export]'), got {e}") from e


def export_onnx(model: nn.Module, out_dir: str | Path, opset: int = DEFAULT_OPSET,
                graphs: tuple[str, ...] = GRAPHS + PHOTO_GRAPHS) -> dict[str, Path]:
    """Write ``<name>.onnx`` for each of ``graphs`` (see the module docstring) into ``out_dir``.

    Args:
        model: a ``SplitBrainAlexNet`` with the paper's pretext heads (e.g. ``load_model()``); exported in fp32.
        out_dir: a folder, created if missing; existing files of the same names are replaced (atomically).
        opset: ONNX opset in ``OPSET_RANGE``.
        graphs: names from ``GRAPHS`` and ``PHOTO_GRAPHS``.
    Returns:
        name -> path written.
    Raises:
        InputError: a bad argument, or a model without the half a graph needs.
        SplitBrainError: onnx or onnxscript is not installed.
    """
    opset = _check_opset(opset)
    _check_onnx_installed()
    selected = _graphs(_fp32_cpu_eval(model), graphs)
    out_dir = _output_dir(out_dir)
    paths = {}
    for name, graph in selected.items():
        paths[name] = out_dir / f'{name}.onnx'
        _save_onnx(graph, paths[name], opset)
    return paths


def export_programs(model: nn.Module, out_dir: str | Path, graphs: tuple[str, ...] = GRAPHS) -> dict[str, Path]:
    """Write ``<name>.pt2`` (``torch.export.save``) for each of ``graphs``: load with ``torch.export.load(path)``
    and run ``.module()(rgb[, temperature])``; batch, height and width are dynamic. Arguments as ``export_onnx``."""
    selected = _graphs(_fp32_cpu_eval(model), graphs)
    out_dir = _output_dir(out_dir)
    paths = {}
    for name, graph in selected.items():
        paths[name] = out_dir / f'{name}.pt2'
        _save_program(graph, paths[name])
    return paths


def _graphs(model: SplitBrainAlexNet, names: tuple[str, ...]) -> dict[str, Graph]:
    known = GRAPHS + PHOTO_GRAPHS
    if isinstance(names, str) or not names or not set(names) <= set(known):
        raise InputError(f'graphs: expected names from {known}, got {names!r}')
    graphs: dict[str, Graph] = {}
    if set(names) & set(GRAPHS):
        graphs.update(_model_graphs(model))
    if set(names) & set(PHOTO_GRAPHS):
        graphs.update(_photo_graphs(model))
    return {name: graphs[name] for name in names}


# --- the browser folder ---------------------------------------------------------------------------

WEB_GRAPHS = ('prepare', 'colorize', 'recombine')


def to_fp16(path: Path) -> None:
    """Store and run an ONNX file's network in float16, its inputs and outputs left float32: half the download.
    onnxruntime-web's wasm backend runs it to within one 8-bit level of fp32 on the result (the browser test)."""
    import onnx
    from onnxconverter_common import float16
    with warnings.catch_warnings():  # it warns about each weight below fp16's smallest number, set to that number
        warnings.simplefilter('ignore', UserWarning)
        converted = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    atomic_write(path, lambda tmp: onnx.save(converted, tmp))


def export_web(model: nn.Module, out_dir: str | Path, ort_dist: str | Path | None = None,
               opset: int = DEFAULT_OPSET) -> list[Path]:
    """Write a static folder that colorizes a dropped photo in the browser, with nothing sent anywhere.

    ``index.html`` and ``colorize.js`` (the page), ``config.json``, the ``WEB_GRAPHS`` as ONNX (the colorizer's
    network in float16, the colour maths in float32) and onnxruntime-web's files under ``ort/``. Any static
    file host serves it.

    Args:
        model, opset: as ``export_onnx``.
        out_dir: a folder, created if missing.
        ort_dist: onnxruntime-web's ``dist`` folder (default: ``web/node_modules/onnxruntime-web/dist`` of the
            source checkout, which ``npm ci`` in ``web/`` fills).
    Returns:
        The files written.
    Raises:
        InputError: onnxruntime-web's files are missing, or a bad argument.
    """
    ort_dist = Path(ORT_WEB_DIST if ort_dist is None else ort_dist)
    missing = [name for name in ORT_WEB_FILES if not (ort_dist / name).is_file()]
    if missing:
        raise InputError(f'ort_dist: expected onnxruntime-web\'s dist folder with {", ".join(ORT_WEB_FILES)} '
                         f'(run `npm ci` in web/ of the source checkout), got {ort_dist} without {", ".join(missing)}')
    out_dir = _output_dir(out_dir)
    written = list(export_onnx(model, out_dir, opset, WEB_GRAPHS).values())
    to_fp16(out_dir / 'colorize.onnx')
    (out_dir / 'ort').mkdir(exist_ok=True)
    for name in ORT_WEB_FILES:
        target = out_dir / 'ort' / Path(name).name
        atomic_write(target, lambda tmp, source=ort_dist / name: shutil.copyfile(source, tmp))
        written.append(target)
    for source in sorted(WEB_ASSETS.iterdir()):
        atomic_write(out_dir / source.name, lambda tmp, source=source: shutil.copyfile(source, tmp))
        written.append(out_dir / source.name)
    config = {'temperature': DEFAULT_TEMPERATURE, 'graphs': {name: f'{name}.onnx' for name in WEB_GRAPHS}}
    atomic_write(out_dir / 'config.json', lambda tmp: Path(tmp).write_text(json.dumps(config, indent=1) + '\n'))
    return written + [out_dir / 'config.json']
