"""The Caffe importer, proven on synthetic .caffemodel files written here in the same wire format.

The synthetic release has the layer names and shapes of the authors' ``deploy_lab.prototxt``,
random weights, zero cross-half blocks, and its L half deliberately not first in conv1 (nor in
the same place in every layer). The reference forward pass below is written from the prototxt
facts with ``torch.nn.functional`` on the Caffe blobs themselves, not from our model.
"""
import json
import shutil
import struct

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from splitbrain_hub import ConversionError, load_pretrained
from splitbrain_hub.cli import main
from splitbrain_hub.deploy.caffe import convert_caffe, read_caffemodel
from splitbrain_hub.ops.color import rgb_to_lab

# --- a protobuf encoder for NetParameter (field numbers from BVLC caffe.proto) --------------------


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(number, wire):
    return _varint(number << 3 | wire)


def _bytes_field(number, payload):
    return _key(number, 2) + _varint(len(payload)) + payload


def _int_field(number, value):
    return _key(number, 0) + _varint(value)


def _encode_blob(array, legacy):
    """BlobProto: modern = shape.dim + packed floats; legacy = num/channels/height/width + unpacked floats."""
    array = np.ascontiguousarray(array, dtype='<f4')
    if not legacy:
        dims = b''.join(_varint(d) for d in array.shape)
        return b''.join([_bytes_field(7, _bytes_field(1, dims)), _key(5, 2), _varint(array.nbytes), array.tobytes()])
    shape = (1,) * (4 - array.ndim) + array.shape  # Caffe's old 1x1x1xN biases
    head = b''.join(_int_field(number, d) for number, d in zip((1, 2, 3, 4), shape))
    if array.size > 5000:  # one field per value is valid protobuf but slow to write here for fc6/fc7
        return b''.join([head, _key(5, 2), _varint(array.nbytes), array.tobytes()])
    return head + b''.join(_key(5, 5) + struct.pack('<f', v) for v in array.ravel())


def _encode_layer(name, kind, blobs, encoding):
    legacy = encoding == 'layers'
    if legacy:  # V1LayerParameter: bottom 2, top 3, name 4, type 5 (enum: CONVOLUTION 4, RELU 18), blobs 6
        head = _bytes_field(4, name.encode()) + _int_field(5, {'Convolution': 4, 'ReLU': 18, 'Pooling': 17}[kind])
        head += _bytes_field(2, b'bottom') + _bytes_field(3, name.encode())
        return b''.join([head] + [_bytes_field(6, _encode_blob(b, legacy)) for b in blobs])
    # LayerParameter: name 1, type 2, bottom 3, top 4, loss_weight 5 (a fixed32), blobs 7,
    # convolution_param 106 (skipped by the reader)
    head = _bytes_field(1, name.encode()) + _bytes_field(2, kind.encode()) + _bytes_field(3, b'bottom')
    head += _bytes_field(4, name.encode()) + _key(5, 5) + struct.pack('<f', 0.0)
    head += _bytes_field(106, _int_field(1, 7) + _int_field(5, 2))
    return b''.join([head] + [_bytes_field(7, _encode_blob(b, legacy)) for b in blobs])


def encode_net(blobs, encoding='layer', extra_layers=()):
    """A NetParameter holding ``blobs`` (name -> [weight, bias]) plus ReLU/Pooling layers without blobs."""
    number = 100 if encoding == 'layer' else 2
    parts = [_bytes_field(1, b'splitbrain_synthetic'), _bytes_field(3, b'img_lab')]
    for name, layer_blobs in blobs.items():
        parts.append(_bytes_field(number, _encode_layer(name, 'Convolution', layer_blobs, encoding)))
        parts.append(_bytes_field(number, _encode_layer('relu' + name[-1], 'ReLU', [], encoding)))
    for name in extra_layers:
        parts.append(_bytes_field(number, _encode_layer(name, 'Pooling', [], encoding)))
    return b''.join(parts)


# --- the synthetic release ------------------------------------------------------------------------

# deploy_lab.prototxt: name -> (out, in, kernel, group, stride, padding, dilation, max pool after)
PROTOTXT = {
    'conv1': (96, 3, 11, 1, 4, 0, 1, True),
    'conv2': (256, 96, 5, 2, 1, 2, 1, True),
    'conv3': (384, 256, 3, 1, 1, 1, 1, False),
    'conv4': (384, 384, 3, 2, 1, 1, 1, False),
    'conv5': (256, 384, 3, 2, 1, 1, 1, True),
    'fc6': (4096, 256, 6, 1, 1, 5, 2, False),
    'fc7': (4096, 4096, 1, 1, 1, 0, 1, False),
}
# The Caffe output channels of the L half (the rest are ab). Grouped layers follow their inputs:
# conv2's group 1 reads conv1's 48..95; conv4/conv5's group 0 reads the L block of conv3/conv4.
L_CHANNELS = {
    'conv1': list(range(48, 96)),
    'conv2': list(range(128, 256)),
    'conv3': list(range(0, 192)),
    'conv4': list(range(0, 192)),
    'conv5': list(range(0, 128)),
    'fc6': list(range(1, 4096, 2)),
    'fc7': list(range(2048, 4096)),
}


def _order(name):
    """Caffe channels in the converted model's order: the L half, then the ab half."""
    out = PROTOTXT[name][0]
    l_set = set(L_CHANNELS[name])
    return L_CHANNELS[name] + [c for c in range(out) if c not in l_set]


def make_release(seed=0):
    """name -> [weight, bias] in Caffe layout, with exactly zero cross-half weights in full layers."""
    g = torch.Generator().manual_seed(seed)
    blobs = {'data_lab': [torch.tensor([0.02, 0.0085, 0.0095]).reshape(3, 1, 1, 1), torch.tensor([-1.0, 0.05, -0.03])]}
    l_in = [0]
    for name, (out, in_chs, k, group, *_) in PROTOTXT.items():
        weight = torch.randn(out, in_chs // group, k, k, generator=g) * (2.0 / (in_chs // group * k * k)) ** 0.5
        if group == 1:
            l_out, l_in_set = set(L_CHANNELS[name]), set(l_in)
            rows = torch.tensor([o in l_out for o in range(out)])
            cols = torch.tensor([i in l_in_set for i in range(in_chs)])
            weight[rows[:, None] & ~cols[None, :]] = 0  # L outputs read no ab input
            weight[~rows[:, None] & cols[None, :]] = 0  # ab outputs read no L input
        blobs[name] = [weight, torch.randn(out, generator=g) * 0.1]
        l_in = L_CHANNELS[name]
    return blobs


def caffe_forward(blobs, lab):
    """The release's network from its prototxt facts, on the Caffe blobs: post-ReLU conv1..fc7."""
    x = F.conv2d(lab, *blobs['data_lab'], groups=3)
    outputs = {}
    for name, (_, _, _, group, stride, padding, dilation, pool) in PROTOTXT.items():
        x = F.relu(F.conv2d(x, *blobs[name], stride=stride, padding=padding, dilation=dilation, groups=group))
        outputs[name] = x
        if pool:
            x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)  # Caffe pools with ceil
    return outputs


@pytest.fixture(scope='module')
def release():
    return make_release()


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
    """A folder for this module's ~230 MB files, removed afterwards (pytest keeps old tmp folders)."""
    root = tmp_path_factory.mktemp('caffe')
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope='module')
def files(release, scratch):
    paths = {}
    for encoding in ('layer', 'layers'):
        paths[encoding] = scratch / f'synthetic_{encoding}.caffemodel'
        paths[encoding].write_bytes(encode_net(release, encoding, extra_layers=('pool1', 'pool2', 'pool5')))
    return paths


@pytest.fixture(scope='module')
def image():
    return torch.rand(1, 3, 227, 227, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope='module')
def reference(release, image):
    with torch.no_grad():
        return caffe_forward(release, rgb_to_lab(image))


# --- reading --------------------------------------------------------------------------------------

def test_read_legacy_encoding(files, release):
    """Bit-exact blobs from the legacy file (4-D shapes, unpacked floats); the modern file converts to
    the same weights (test_both_encodings_give_the_same_weights)."""
    net = read_caffemodel(files['layers'])
    assert net.encoding == 'layers'
    assert {name for name, layer in net.layers.items() if layer.blobs} == set(release)
    assert net.layers['conv1'].type == 'Convolution' and net.layers['relu1'].blobs == []
    assert tuple(net.layers['conv1'].blobs[1].shape) == (1, 1, 1, 96)  # Caffe's old 1x1x1xN biases
    for name, (weight, bias) in release.items():
        got_weight, got_bias = net.layers[name].blobs
        torch.testing.assert_close(got_weight.reshape(weight.shape), weight, rtol=0, atol=0)
        torch.testing.assert_close(got_bias.reshape(bias.shape), bias, rtol=0, atol=0)


# --- converting: same function as the reference ---------------------------------------------------

@pytest.fixture(scope='module')
def converted(files, scratch):
    """The modern file with our pool5 (stride 1), the legacy one with the release's (stride 2)."""
    return {
        'layer': convert_caffe(files['layer'], scratch / 'converted_layer'),
        'layers': convert_caffe(files['layers'], scratch / 'converted_layers', pool5_stride=2),
    }


def _max_diffs(model, reference, image, layers):
    with torch.no_grad():
        taps = dict(zip(PROTOTXT, model.forward_intermediates(image, intermediates_only=True)))
        if 'fc6' in layers:
            pool5 = model.features.forward_each(model.data_lab(image))  # each half's own pool5
            branches = model.pre_logits.branches.values()
            taps['fc6'] = torch.cat([branch[:2](x) for branch, x in zip(branches, pool5)], dim=1)  # fc6, relu6
            taps['fc7'] = torch.cat([branch(x) for branch, x in zip(branches, pool5)], dim=1)
    diffs = {}
    for name in layers:
        expected = reference[name][:, _order(name)]
        assert taps[name].shape == expected.shape, name
        diffs[name] = float((taps[name] - expected).abs().max())
    return diffs


def test_convert_matches_caffe_conv1_to_conv5(converted, reference, image):
    report = converted['layer']
    model = timm.create_model('splitbrain_alexnet', pretrained=True, pretext={},
                              pretrained_cfg_overlay=dict(file=str(report.weights_path))).eval()
    diffs = _max_diffs(model, reference, image, ['conv1', 'conv2', 'conv3', 'conv4', 'conv5'])
    print('max |converted - caffe reference|, pool5_stride=1:', diffs)
    assert max(diffs.values()) <= 1e-4, diffs
    assert all(reference[name].abs().max() > 0.1 for name in diffs), 'reference activations are not trivial'


def test_convert_matches_caffe_all_layers_with_release_pool5(converted, reference, image):
    model = load_pretrained(converted['layers'].weights_path.parent).eval()
    assert model.pool5_stride == 2 and len(model.pretext) == 0
    diffs = _max_diffs(model, reference, image, list(PROTOTXT))
    print('max |converted - caffe reference|, pool5_stride=2:', diffs)
    assert max(diffs.values()) <= 1e-4, diffs
    assert reference['fc7'].shape[-2:] == (6, 6)


def test_report_and_config(converted):
    for encoding, report in converted.items():
        assert report.encoding == encoding
        assert [layer.name for layer in report.layers] == list(PROTOTXT)
        for layer in report.layers:
            assert layer.channels['l_half'] == L_CHANNELS[layer.name]
            assert layer.cross_half_max == 0.0 and layer.weight_max > 0
        assert report.ignored == [] and report.forced == []
        text = '\n'.join(report.lines())
        assert 'l_half = Caffe channels 48-95' in text and '(2048 channels in 2048 runs)' in text
        config = json.loads((report.weights_path.parent / 'config.json').read_text())
        assert config['model_args']['pretext'] == {}
        assert config['pretrained_cfg']['input_size'] == [3, 227, 227]
        assert 'hf_hub_id' not in config['pretrained_cfg']
        assert config['converted_from']['encoding'] == encoding
    configs = {e: json.loads((r.weights_path.parent / 'config.json').read_text()) for e, r in converted.items()}
    for encoding, stride, grid in (('layer', 1, [13, 13]), ('layers', 2, [6, 6])):
        assert configs[encoding]['model_args']['pool5_stride'] == stride
        assert configs[encoding]['pretrained_cfg']['pool_size'] == grid


def test_both_encodings_give_the_same_weights(converted):
    from splitbrain_hub.hub import load_safetensors
    ours, theirs = (load_safetensors(converted[e].weights_path) for e in ('layer', 'layers'))
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)


# --- errors ---------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(ConversionError, match='does not exist'):
        convert_caffe(tmp_path / 'nope.caffemodel', tmp_path / 'out')


@pytest.mark.parametrize('corruption', ['truncated', 'garbage', 'empty', 'bad_wire_type', 'both_encodings'])
def test_corrupt_files(tmp_path, corruption):
    small = {'conv1': [torch.ones(2, 3, 1, 1), torch.zeros(2)]}
    data = {
        'truncated': encode_net(small)[:-7],
        'garbage': bytes(range(256)) * 4,
        'empty': b'',
        'bad_wire_type': _key(100, 3) + b'\x00' * 8,
        'both_encodings': encode_net(small, 'layer') + encode_net(small, 'layers'),
    }[corruption]
    path = tmp_path / 'bad.caffemodel'
    path.write_bytes(data)
    with pytest.raises(ConversionError, match=str(path)):
        convert_caffe(path, tmp_path / 'out')
    assert not (tmp_path / 'out').exists(), 'nothing written on error'


def test_blob_with_wrong_value_count(tmp_path):
    blob = _bytes_field(7, _bytes_field(1, _varint(4))) + _bytes_field(5, np.zeros(3, '<f4').tobytes())
    path = tmp_path / 'bad.caffemodel'
    path.write_bytes(_bytes_field(100, _bytes_field(1, b'conv1') + _bytes_field(7, blob)))
    with pytest.raises(ConversionError, match=r'shape \(4,\) needs 4 values, got 3'):
        read_caffemodel(path)


def test_another_network(tmp_path):
    """A caffemodel of another net (here: only an AlexNet-like conv1 and fc8) names what is missing."""
    other = {'conv1': [torch.zeros(96, 3, 11, 11), torch.zeros(96)],
             'fc8': [torch.zeros(1000, 4096), torch.zeros(1000)]}
    path = tmp_path / 'other.caffemodel'
    path.write_bytes(encode_net(other))
    missing = r"missing weighted layers \['data_lab', 'conv2'.*found \['conv1', 'fc8'\]"
    with pytest.raises(ConversionError, match=missing):
        convert_caffe(path, tmp_path / 'out')


def test_wrong_shapes(release, tmp_path):
    """All layers present, conv3 of another width: the error names the layer and both shapes."""
    tiny = {name: [torch.zeros(2, 1, 1, 1), torch.zeros(2)] for name in release}
    tiny['data_lab'] = release['data_lab']
    tiny['conv1'] = release['conv1']
    tiny['conv2'] = release['conv2']
    tiny['conv3'] = [torch.zeros(384, 128, 3, 3), torch.zeros(384)]
    path = tmp_path / 'shapes.caffemodel'
    path.write_bytes(encode_net(tiny))
    message = (r'conv3: expected blobs of shapes \[\(384, 256, 3, 3\), \(384,\)\] \(weight, bias\), '
               r'got \[\(384, 128, 3, 3\), \(384,\)\]')
    with pytest.raises(ConversionError, match=message):
        convert_caffe(path, tmp_path / 'out')


def test_non_finite_weights(release, tmp_path):
    tiny = {name: [torch.zeros(2, 1, 1, 1), torch.zeros(2)] for name in release}
    tiny['data_lab'] = [torch.tensor([0.02, float('nan'), 0.01]).reshape(3, 1, 1, 1), torch.zeros(3)]
    path = tmp_path / 'nan.caffemodel'
    path.write_bytes(encode_net(tiny))
    with pytest.raises(ConversionError, match='data_lab: expected finite weights, got NaN or infinity'):
        convert_caffe(path, tmp_path / 'out')


def test_cross_half_weights_refused_unless_forced(files, release, scratch, capsys):
    # One weight of conv3's L filter 0 on an ab channel of conv2 (0..127 are ab), patched into a copy
    # of the synthetic file where that weight's float32 lies (quicker than encoding 230 MB again).
    data = bytearray(files['layer'].read_bytes())
    conv3 = release['conv3'][0].numpy()
    start = data.find(conv3.tobytes())
    assert start > 0
    at = start + 4 * int(np.ravel_multi_index((0, 5, 1, 1), conv3.shape))
    data[at:at + 4] = struct.pack('<f', 0.01)
    path = scratch / 'mixed.caffemodel'
    path.write_bytes(data)
    refusal = r'expected zero weights between the L and ab halves.*conv3 0\.01 .*--force'
    with pytest.raises(ConversionError, match=refusal):
        convert_caffe(path, scratch / 'out')
    assert not (scratch / 'out').exists()
    # Forced, through the command line: it prints the report.
    assert main(['convert-caffe', str(path), '-o', str(scratch / 'out'), '--force']) == 0
    printed = capsys.readouterr().out
    assert "FORCED: cross-half weights dropped in ['conv3']" in printed
    assert 'conv3: largest cross-half weight 0.01 ' in printed
    assert (scratch / 'out' / 'model.safetensors').is_file()


def test_bad_pool5_stride(files, tmp_path):
    with pytest.raises(ConversionError, match='pool5_stride: expected one of'):
        convert_caffe(files['layer'], tmp_path / 'out', pool5_stride=3)


def test_cli_refusal_exit_status(tmp_path, capsys):
    path = tmp_path / 'empty.caffemodel'
    path.write_bytes(b'')
    assert main(['convert-caffe', str(path), '-o', str(tmp_path / 'out')]) == 2
    assert 'error: ' in capsys.readouterr().err and not (tmp_path / 'out').exists()
