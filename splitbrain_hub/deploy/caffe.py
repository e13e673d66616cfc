"""Import the authors' released Caffe weights (``model_splitbrainauto_clcl.caffemodel``) without Caffe.

A ``.caffemodel`` is a binary protobuf ``NetParameter``. It is read here by a small wire-format
reader that decodes only the fields it needs (layer name, type, blobs), checks every length against
the bytes that are left, and refuses anything it does not understand: no Caffe, no ``protobuf``
package, no code generated from ``caffe.proto``. Field numbers (BVLC ``src/caffe/proto/caffe.proto``):

    NetParameter      layer = 100 (LayerParameter), layers = 2 (V1LayerParameter, legacy)
    LayerParameter    name = 1, type = 2 (string), blobs = 7
    V1LayerParameter  name = 4, type = 5 (enum),   blobs = 6
    BlobProto         shape = 7, data = 5 (float), double_data = 8,
                      num = 1, channels = 2, height = 3, width = 4 (legacy 4-D shape)
    BlobShape         dim = 1

The release's network (``deploy_lab.prototxt``) is AlexNet on Lab with full conv1, conv3, fc6, fc7
and group-2 conv2, conv4, conv5. Our ``SplitBrainAlexNet`` stores each half as a dense tower, so
every Caffe layer is cut into the two halves: conv1's filters whose weights on a, b are zero form
the L half, each later layer's filters follow the half their inputs come from, and the weights
that would connect one half to the other must be zero, or the converted model is not the same
function. ``data_lab`` (a per-channel scale and shift of Lab) becomes the model's input buffers.
"""
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConversionError
from ..hub import DEFAULT_ARCHITECTURE, save_pretrained, sha256_of
from ..models.splitbrain_alexnet import SPLIT_BRAIN_HALVES, SplitBrainAlexNet

__all__ = ['CaffeLayer', 'CaffeNet', 'LayerSplit', 'CaffeConversion', 'read_caffemodel', 'convert_caffe']

# The release is ~230 MB; a file far larger than any AlexNet is refused before it is read.
MAX_FILE_BYTES = 1 << 30
MAX_BLOB_AXES = 32  # Caffe's own limit (kMaxBlobAxes)
MAX_DIM = 1 << 31

# A cross-half weight counts as zero when it is at most this fraction of the layer's largest weight.
CROSS_HALF_TOLERANCE = 1e-5


# --- protobuf wire format -------------------------------------------------------------------------

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
_FIXED_SIZES = {FIXED64: 8, FIXED32: 4}


def _varint(data: memoryview, pos: int, what: str) -> tuple[int, int]:
    """An unsigned varint at ``pos``: (value, position after it)."""
    value = 0
    for shift in range(0, 70, 7):  # at most 10 bytes encode 64 bits
        if pos >= len(data):
            raise ConversionError(f'{what}: expected a varint, got the end of the data (truncated file?)')
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value & 0xFFFF_FFFF_FFFF_FFFF, pos
    raise ConversionError(f'{what}: expected a varint of at most 10 bytes, got a longer one (corrupt file?)')


def _fields(data: memoryview, what: str) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field of a message: an int, or the raw bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ConversionError(f'{what}: expected a protobuf field number >= 1, got 0 (not a protobuf message?)')
        if wire == VARINT:
            value, pos = _varint(data, pos, what)
            yield number, wire, value
            continue
        if wire == LENGTH_DELIMITED:
            size, pos = _varint(data, pos, what)
        elif wire in _FIXED_SIZES:
            size = _FIXED_SIZES[wire]
        else:  # 3, 4 (groups) do not occur in caffe.proto; 6, 7 do not exist
            raise ConversionError(f'{what}: expected a protobuf wire type in 0, 1, 2, 5, got {wire} in field '
                                  f'{number} (not a .caffemodel, or corrupt)')
        if size > len(data) - pos:
            raise ConversionError(f'{what}: field {number} needs {size} bytes, only {len(data) - pos} are left '
                                  '(truncated file?)')
        yield number, wire, data[pos:pos + size]
        pos += size


def _expect_wire(number: int, wire: int, expected: int, what: str) -> None:
    if wire != expected:
        raise ConversionError(f'{what}: expected wire type {expected} for field {number}, got {wire} (corrupt file?)')


def _text(value: memoryview, what: str) -> str:
    try:
        return bytes(value).decode('utf-8')
    except UnicodeDecodeError as e:
        raise ConversionError(f'{what}: expected a UTF-8 string, got undecodable bytes ({e})') from e


# BlobProto: field -> little-endian dtype of its values; each may be packed or one value per field.
_BLOB_VALUES = {5: np.dtype('<f4'), 8: np.dtype('<f8')}
_VALUE_WIRE = {4: FIXED32, 8: FIXED64}
_LEGACY_SHAPE_FIELDS = (1, 2, 3, 4)  # num, channels, height, width


def _blob_shape(data: memoryview, what: str) -> list[int]:
    """BlobShape.dim: int64 varints, packed or one per field."""
    dims: list[int] = []

    def add(dim: int) -> None:
        if len(dims) == MAX_BLOB_AXES:
            raise ConversionError(f'{what}: expected at most {MAX_BLOB_AXES} axes, got more')
        dims.append(dim)

    for number, wire, value in _fields(data, what):
        if number != 1:
            continue
        if wire == LENGTH_DELIMITED:
            pos = 0
            while pos < len(value):
                dim, pos = _varint(value, pos, what)
                add(dim)
        else:
            _expect_wire(number, wire, VARINT, what)
            add(value)
    return dims


def _blob(data: memoryview, what: str) -> torch.Tensor:
    """A BlobProto as a float32 tensor of its shape (``shape.dim``, else legacy num/channels/height/width)."""
    dims = None
    legacy = {}
    chunks: dict[int, list[np.ndarray]] = {number: [] for number in _BLOB_VALUES}
    for number, wire, value in _fields(data, what):
        if number == 7:
            _expect_wire(number, wire, LENGTH_DELIMITED, what)
            dims = _blob_shape(value, what + ' shape')
        elif number in _LEGACY_SHAPE_FIELDS:
            _expect_wire(number, wire, VARINT, what)
            legacy[number] = value
        elif number in _BLOB_VALUES:
            dtype = _BLOB_VALUES[number]
            if wire != LENGTH_DELIMITED:
                _expect_wire(number, wire, _VALUE_WIRE[dtype.itemsize], what)
            if len(value) % dtype.itemsize:
                raise ConversionError(f'{what}: expected values of {dtype.itemsize} bytes each, got {len(value)} bytes')
            chunks[number].append(np.frombuffer(value, dtype=dtype))
        # anything else (diff, double_diff, unknown fields) is not needed
    filled = [number for number, parts in chunks.items() if parts]
    if len(filled) > 1:
        raise ConversionError(f'{what}: expected float data or double data, got both')
    values = np.concatenate(chunks[filled[0]]) if filled else np.zeros(0, dtype=np.float32)
    if dims is None:  # as Caffe reads it: the legacy 4-D shape, each axis 0 unless given
        dims = [legacy.get(number, 0) for number in _LEGACY_SHAPE_FIELDS]
    if any(dim >= MAX_DIM for dim in dims):
        raise ConversionError(f'{what}: expected dimensions below {MAX_DIM}, got {dims}')
    if int(np.prod(dims, dtype=object)) != len(values):
        raise ConversionError(f'{what}: shape {tuple(dims)} needs {int(np.prod(dims, dtype=object))} values, '
                              f'got {len(values)}')
    return torch.from_numpy(values.astype(np.float32).reshape(dims))


@dataclass(frozen=True)
class _LayerEncoding:
    """Where NetParameter keeps its layers and where those keep name, type and blobs."""
    net_field: int
    name: int
    type: int
    blobs: int


LAYER_ENCODINGS = {
    'layer': _LayerEncoding(net_field=100, name=1, type=2, blobs=7),  # LayerParameter, type a string
    'layers': _LayerEncoding(net_field=2, name=4, type=5, blobs=6),  # V1LayerParameter, type an enum
}
# V1LayerParameter.LayerType values the converter needs to name (caffe.proto).
V1_LAYER_TYPES = {4: 'Convolution', 14: 'InnerProduct'}


@dataclass
class CaffeLayer:
    name: str
    type: str
    blobs: list[torch.Tensor]


@dataclass
class CaffeNet:
    """What a ``.caffemodel`` holds that matters here: its layers by name, and their encoding."""
    encoding: str
    layers: dict[str, CaffeLayer]


def _layer(data: memoryview, encoding: _LayerEncoding, what: str) -> CaffeLayer:
    name, kind, blobs = '', '', []
    for number, wire, value in _fields(data, what):
        if number == encoding.name:
            _expect_wire(number, wire, LENGTH_DELIMITED, what)
            name = _text(value, what + ' name')
            what = f'{what} ({name!r})'
        elif number == encoding.type and wire == VARINT:
            kind = V1_LAYER_TYPES.get(value, f'V1 type {value}')
        elif number == encoding.type:
            _expect_wire(number, wire, LENGTH_DELIMITED, what)
            kind = _text(value, what + ' type')
        elif number == encoding.blobs:
            _expect_wire(number, wire, LENGTH_DELIMITED, what)
            blobs.append(_blob(value, f'{what} blob {len(blobs)}'))
    return CaffeLayer(name, kind, blobs)


def read_caffemodel(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> CaffeNet:
    """Read the layers of a binary ``.caffemodel`` (``layer`` or legacy ``layers`` encoding).

    Raises:
        ConversionError: the file is missing, larger than ``max_bytes``, not a protobuf NetParameter,
            truncated, mixes both encodings, has no layers, or names two weighted layers alike.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f'{path}: expected a .caffemodel file, but it does not exist')
    size = path.stat().st_size
    if size > max_bytes:
        raise ConversionError(f'{path}: expected at most {max_bytes} bytes for a .caffemodel, got {size}')
    data = memoryview(path.read_bytes())
    found: dict[str, list[memoryview]] = {key: [] for key in LAYER_ENCODINGS}
    for number, wire, value in _fields(data, str(path)):
        for key, encoding in LAYER_ENCODINGS.items():
            if number == encoding.net_field:
                _expect_wire(number, wire, LENGTH_DELIMITED, str(path))
                found[key].append(value)
    used = [key for key, messages in found.items() if messages]
    if len(used) != 1:
        problem = 'both' if used else 'neither'
        raise ConversionError(f'{path}: expected a Caffe NetParameter with either "layer" or legacy "layers", '
                              f'got {problem} (not a .caffemodel?)')
    encoding = LAYER_ENCODINGS[used[0]]
    layers: dict[str, CaffeLayer] = {}
    for index, message in enumerate(found[used[0]]):
        layer = _layer(message, encoding, f'{path}: layer {index}')
        if layer.blobs and layer.name in layers:
            raise ConversionError(f'{path}: expected unique layer names, got two weighted layers {layer.name!r}')
        if layer.blobs or layer.name not in layers:
            layers[layer.name] = layer
    return CaffeNet(used[0], layers)


# --- mapping onto SplitBrainAlexNet ---------------------------------------------------------------

DATA_LAB = 'data_lab'
# deploy_lab.prototxt: the grouped convolutions (group 2 = one group per half); the rest are full.
CAFFE_GROUPS = {'conv2': 2, 'conv4': 2, 'conv5': 2}
# What the converted model records: the release takes 227x227 crops (AlexNet's resize-256,
# centre-crop-227 protocol); timm's pool_size is the pool5 grid for that input.
CAFFE_INPUT_SIZE = (3, 227, 227)
CAFFE_CROP_PCT = 227 / 256
POOL5_GRID = {1: (13, 13), 2: (6, 6)}


def _weighted_layers(model: SplitBrainAlexNet) -> list[tuple[str, str, int, int, int]]:
    """(Caffe name, our module path with {half}, out channels, in channels, kernel) of conv1..fc7 of ``model``."""
    rows, in_chs = [], 3
    for prefix, table in (('features', model.convs), ('pre_logits', model.fcs)):
        for name, out_chs, kernel, *_ in table:
            rows.append((name, f'{prefix}.branches.{{half}}.{name}', out_chs, in_chs, kernel))
            in_chs = out_chs
    return rows


def _dense(weight: torch.Tensor, in_chs: int) -> torch.Tensor:
    """A grouped convolution's weight as the equivalent full one (zeros between groups)."""
    groups = in_chs // weight.shape[1]
    if groups == 1:
        return weight
    out_per, in_per = weight.shape[0] // groups, weight.shape[1]
    dense = weight.new_zeros(weight.shape[0], in_chs, *weight.shape[2:])
    for g in range(groups):
        dense[g * out_per:(g + 1) * out_per, g * in_per:(g + 1) * in_per] = weight[g * out_per:(g + 1) * out_per]
    return dense


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _checked_blobs(layer: CaffeLayer, shapes: list[tuple[int, ...]], what: str) -> list[torch.Tensor]:
    """The layer's blobs reshaped to ``shapes``; legacy blobs may carry extra 1-sized axes (1x1x1xN)."""
    if layer.type and layer.type != 'Convolution':
        raise ConversionError(f'{what}: expected a Convolution layer (deploy_lab.prototxt), got {layer.type!r}')
    got = [tuple(blob.shape) for blob in layer.blobs]
    if len(got) != len(shapes) or any(_squeezed(g) != _squeezed(s) for g, s in zip(got, shapes)):
        raise ConversionError(f'{what}: expected blobs of shapes {shapes} (weight, bias), got {got}')
    if not all(bool(torch.isfinite(blob).all()) for blob in layer.blobs):
        raise ConversionError(f'{what}: expected finite weights, got NaN or infinity')
    return [blob.reshape(shape) for blob, shape in zip(layer.blobs, shapes)]


@dataclass(frozen=True)
class LayerSplit:
    """How one Caffe layer was cut into the halves."""
    name: str
    channels: dict[str, list[int]]  # half -> the Caffe output channels it got, in the model's order
    cross_half_max: float  # the largest |weight| from one half's inputs to the other half's outputs
    weight_max: float

    @property
    def is_split(self) -> bool:
        return self.cross_half_max <= CROSS_HALF_TOLERANCE * self.weight_max


def _span(indices: list[int], most: int = 4) -> str:
    """[0, 1, 2, 5] -> '0-2, 5': channel lists as a person reads them (scattered ones abbreviated)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = ', '.join(f'{a}-{b}' if a != b else f'{a}' for a, b in runs[:most])
    return text if len(runs) <= most else f'{text}, ... ({len(indices)} channels in {len(runs)} runs)'


@dataclass
class CaffeConversion:
    """What ``convert_caffe`` did: the layers it cut, how cleanly, and what it wrote."""
    source: Path
    encoding: str
    layers: list[LayerSplit]
    ignored: list[str]
    weights_path: Path
    pool5_stride: int
    forced: list[str] = field(default_factory=list)  # layers converted despite cross-half weights

    def lines(self) -> list[str]:
        out = [f'{self.source} ({self.encoding!r} encoding) -> {self.weights_path}']
        for layer in self.layers:
            halves = '; '.join(f'{half} = Caffe channels {_span(ch)}' for half, ch in layer.channels.items())
            out.append(f'  {layer.name}: largest cross-half weight {layer.cross_half_max:.3g} '
                       f'(largest weight {layer.weight_max:.3g}); {halves}')
        if self.ignored:
            out.append(f'  ignored weighted layers the model has no place for: {self.ignored}')
        if self.forced:
            out.append(f'  FORCED: cross-half weights dropped in {self.forced}: not the same function as the release')
        out.append(f'  pool5 stride {self.pool5_stride}: conv1..conv5 match the release; fc6/fc7 '
                   + ('match it too' if self.pool5_stride == 2 else
                      "differ from it (stride-1 pool5; load with pool5_stride=2 for the release's fc6/fc7)"))
        return out


def _split(name: str, weight: torch.Tensor, inputs: dict[str, torch.Tensor]) -> LayerSplit:
    """Give each output filter to the half whose inputs it reads; the other half's weights are cross-half.

    With two halves (``first``, ``second``) a filter's score is its largest weight on the second
    half's inputs minus its largest on the first's; the half-width lowest scores form the first
    half. Exact zeros split cleanly; anything else shows up in ``cross_half_max``.
    """
    magnitude = weight.abs().flatten(2).amax(dim=2)  # (out, in)
    on = {half: magnitude[:, idx].amax(dim=1) for half, idx in inputs.items()}
    first, second = inputs
    order = torch.argsort(on[second] - on[first], stable=True)
    width = weight.shape[0] // 2
    channels = {first: order[:width].sort().values, second: order[width:].sort().values}
    cross = max(float(on[second][channels[first]].max()), float(on[first][channels[second]].max()))
    return LayerSplit(name, {h: c.tolist() for h, c in channels.items()}, cross, float(magnitude.max()))


def convert_caffe(caffemodel: str | Path, out_dir: str | Path, force: bool = False,
                  pool5_stride: int = 1) -> CaffeConversion:
    """Convert the authors' split-brain ``.caffemodel`` to a ``save_pretrained`` folder.

    The result loads with ``splitbrain_hub.load_pretrained(out_dir)`` or
    ``timm.create_model('splitbrain_alexnet', pretrained=True, pretext={}, pool5_stride=...,
    pretrained_cfg_overlay=dict(file=out_dir + '/model.safetensors'))`` (the release has no pretext
    heads). conv1..conv5 reproduce the Caffe network; fc6/fc7 do only with ``pool5_stride=2``.

    Args:
        caffemodel: the binary ``.caffemodel`` (``layer`` or legacy ``layers`` encoding).
        out_dir: where ``model.safetensors`` and ``config.json`` go (created; files replaced atomically).
        force: write the model even if weights connect one half to the other (they are dropped).
        pool5_stride: 1 (our default, pool5 keeps the conv5 grid) or 2 (the release's pool5).
    Returns:
        The report: per layer, the Caffe channels each half got and the largest cross-half weight.
    Raises:
        ConversionError: unreadable file, layers missing or of other shapes, or halves not separable
            (unless ``force``); nothing is written then.
    """
    import timm

    if pool5_stride not in POOL5_GRID:
        raise ConversionError(f'pool5_stride: expected one of {sorted(POOL5_GRID)}, got {pool5_stride}')
    source = Path(caffemodel)
    net = read_caffemodel(source)
    overlay = dict(
        tag='caffe', input_size=CAFFE_INPUT_SIZE, crop_pct=CAFFE_CROP_PCT, pool_size=POOL5_GRID[pool5_stride],
        hf_hub_id=None, license='other',
        notes=(f"Converted by splitbrain_hub.convert_caffe from the authors' Caffe release {source.name}; "
               "the authors' terms for their weights apply.",),
    )
    # Built on the meta device: every tensor comes from the file, none is initialised for nothing.
    model = timm.create_model(DEFAULT_ARCHITECTURE, pretext={}, pool5_stride=pool5_stride,
                              pretrained_cfg_overlay=overlay, device='meta')
    rows = _weighted_layers(model)
    needed = [DATA_LAB] + [row[0] for row in rows]
    missing = [name for name in needed if name not in net.layers or not net.layers[name].blobs]
    if missing:
        found = sorted(name for name, layer in net.layers.items() if layer.blobs)
        raise ConversionError(f'{source}: expected the split-brain deploy_lab network, missing weighted layers '
                              f'{missing} (found {found})')

    lab_weight, lab_bias = _checked_blobs(net.layers[DATA_LAB], [(3, 1, 1, 1), (3,)], f'{source}: {DATA_LAB}')
    state = {'data_lab.weight': lab_weight, 'data_lab.bias': lab_bias}
    inputs = {half: torch.tensor(channels) for half, channels in SPLIT_BRAIN_HALVES.items()}
    splits: list[LayerSplit] = []
    for name, module, out_chs, in_chs, kernel in rows:
        group = CAFFE_GROUPS.get(name, 1)
        weight, bias = _checked_blobs(net.layers[name], [(out_chs, in_chs // group, kernel, kernel), (out_chs,)],
                                      f'{source}: {name}')
        dense = _dense(weight, in_chs)
        split = _split(name, dense, inputs)
        splits.append(split)
        for half, channels in split.channels.items():
            state[module.format(half=half) + '.weight'] = dense[channels][:, inputs[half]]
            state[module.format(half=half) + '.bias'] = bias[channels]
        inputs = {half: torch.tensor(channels) for half, channels in split.channels.items()}

    not_split = [s.name for s in splits if not s.is_split]
    if not_split and not force:
        worst = ', '.join(f'{s.name} {s.cross_half_max:.3g} (largest weight {s.weight_max:.3g})'
                          for s in splits if not s.is_split)
        raise ConversionError(
            f'{source}: expected zero weights between the L and ab halves (at most {CROSS_HALF_TOLERANCE:g} of '
            f"each layer's largest), got {worst}; dropping them would change the network. Use force=True "
            '(--force) to convert anyway.')

    model.load_state_dict(state, strict=True, assign=True)
    weights_path = save_pretrained(model, out_dir, extra_config={'converted_from': {
        'file': source.name, 'sha256': sha256_of(source), 'encoding': net.encoding,
        'cross_half_max': {s.name: s.cross_half_max for s in splits},
        'l_half_caffe_channels': {s.name: _span(s.channels['l_half']) for s in splits},
        'forced': not_split,
    }})
    ignored = sorted(name for name, layer in net.layers.items() if layer.blobs and name not in needed)
    return CaffeConversion(source, net.encoding, splits, ignored, weights_path, pool5_stride, not_split)
