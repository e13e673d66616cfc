"""export.py: ONNX graphs checked in onnxruntime against PyTorch on real photos, torch.export programs, errors.

The shipped weights are exported once for the session (conftest's ``shipped_onnx``, about 30 s on 2 cores;
the browser test reuses them).
"""
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import splitbrain_hub
from splitbrain_hub import cli
from splitbrain_hub.deploy import export
from splitbrain_hub.errors import InputError
from splitbrain_hub.images import SAMPLE_PHOTO
from splitbrain_hub.models.splitbrain_alexnet import DataLab

ort = pytest.importorskip('onnxruntime', reason='the export tests need onnxruntime (pip install splitbrain-hub[test])')
skimage_data = pytest.importorskip('skimage.data', reason='the photos come from scikit-image (splitbrain-hub[test])')

TEMPERATURE = np.array(0.38, dtype=np.float32)
AB_TOLERANCE = 0.05  # Lab units
FEATURE_TOLERANCE = 1e-4  # max |onnx - torch| / max |torch|, per layer


def photos(count: int, size: tuple) -> torch.Tensor:
    """``count`` real photos (the shipped one, then scikit-image's), resized to ``size`` (height, width)."""
    arrays = [np.asarray(Image.open(SAMPLE_PHOTO).convert('RGB')), skimage_data.astronaut(), skimage_data.chelsea(),
              skimage_data.rocket(), skimage_data.hubble_deep_field()][:count]
    resized = [np.asarray(Image.fromarray(a).resize(size[::-1], Image.BILINEAR)) for a in arrays]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope='module')
def model(shipped_model):
    return shipped_model


@pytest.fixture(scope='module')
def onnx_dir(shipped_onnx):
    return shipped_onnx


def session(paths, name):
    return ort.InferenceSession(str(paths[name]), providers=['CPUExecutionProvider'])


# --- parity with PyTorch --------------------------------------------------------------------------

SIZES = [(96, 96), (144, 200)]


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('batch', [1, 5])
@pytest.mark.parametrize('name, task', [('colorize', 'COLORIZE'), ('lightness', 'LIGHTNESS')])
def test_half_predictions_match_torch(model, onnx_dir, name, task, batch, size):
    rgb = photos(batch, size)
    with torch.no_grad():
        expected = export.HalfPrediction(model, getattr(export, task))(rgb, torch.tensor(0.38)).numpy()
    (got,) = session(onnx_dir, name).run(None, {'rgb': rgb.numpy(), 'temperature': TEMPERATURE})
    assert got.shape == expected.shape == (batch, 2 if name == 'colorize' else 1, *expected.shape[2:])
    assert np.abs(got - expected).max() <= AB_TOLERANCE


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('batch', [1, 5])
def test_features_match_torch(model, onnx_dir, batch, size):
    rgb = photos(batch, size)
    with torch.no_grad():
        expected = model.forward_intermediates(rgb, intermediates_only=True)
    features = session(onnx_dir, 'features')
    got = features.run(None, {'rgb': rgb.numpy()})
    assert [output.name for output in features.get_outputs()] == list(splitbrain_hub.inference.FEATURE_LAYERS)
    for layer, reference in zip(got, expected, strict=True):
        assert layer.shape == tuple(reference.shape)
        assert np.abs(layer - reference.numpy()).max() / np.abs(reference.numpy()).max() <= FEATURE_TOLERANCE


def test_photo_pipeline_is_colorize(model, onnx_dir):
    """prepare -> colorize -> recombine in onnxruntime gives ``splitbrain_hub.colorize`` (fp32) on a real photo."""
    photo = photos(1, (400, 600))
    expected = splitbrain_hub.colorize(photo, model=model, amp='off')
    (network_input,) = session(onnx_dir, 'prepare').run(None, {'photo': photo.numpy()})
    (ab,) = session(onnx_dir, 'colorize').run(None, {'rgb': network_input, 'temperature': TEMPERATURE})
    (got,) = session(onnx_dir, 'recombine').run(None, {'photo': photo.numpy(), 'ab': ab})
    side = model.pretrained_cfg['input_size'][-1]
    assert network_input.shape == (1, 3, side, side * 3 // 2) and got.shape == (1, 3, 400, 600)  # aspect kept
    assert np.abs(got - expected.numpy()).max() <= 1 / 255


def test_temperature_is_an_input(model, onnx_dir):
    """Not baked in at export time: each temperature gives what PyTorch gives at it."""
    rgb = photos(1, (96, 96))
    colorize = session(onnx_dir, 'colorize')
    got = {t: colorize.run(None, {'rgb': rgb.numpy(), 'temperature': np.array(t, np.float32)})[0] for t in (0.1, 5.0)}
    for t, ab in got.items():
        with torch.no_grad():
            expected = export.HalfPrediction(model, export.COLORIZE)(rgb, torch.tensor(t)).numpy()
        assert np.abs(ab - expected).max() <= AB_TOLERANCE, t
    assert np.abs(got[0.1] - got[5.0]).max() > 1


def test_colorize_holds_the_l_half_only(model, onnx_dir):
    """The file is about half the model: the ab half's weights are not in it."""
    import onnx
    graph = onnx.load(str(onnx_dir['colorize']), load_external_data=False).graph
    in_file = sum(int(np.prod(tensor.dims)) for tensor in graph.initializer)
    l_half = sum(p.numel() for name, p in model.named_parameters() if 'l_half' in name)
    # Within 1 %: small tensors may be folded into constants, and the bin centres are added.
    assert abs(in_file - l_half) < 0.01 * l_half


# --- torch.export ---------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def programs(weights, tmp_path_factory):
    """``splitbrain-hub export torch`` of the random-init checkpoint (conftest's ``weights``)."""
    folder = tmp_path_factory.mktemp('pt2')
    assert cli.main(['export', 'torch', '-o', str(folder), '--weights', str(weights)]) == cli.EXIT_OK
    return folder


def test_cli_exports_torch_programs(programs):
    assert sorted(p.name for p in programs.iterdir()) == ['colorize.pt2', 'features.pt2', 'lightness.pt2']


def test_exported_program_loads_and_runs_at_any_batch(weights, programs):
    model = splitbrain_hub.load_pretrained(weights).eval()
    program = torch.export.load(programs / 'colorize.pt2')
    for batch in (1, 3):
        rgb = photos(batch, (96, 128))
        with torch.no_grad():
            expected = export.HalfPrediction(model, export.COLORIZE)(rgb, torch.tensor(0.38))
        got = program.module()(rgb, torch.tensor(0.38))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_lab_conversion_traces_with_a_dynamic_batch_and_the_same_numbers():
    """A batch larger than the CPU chunk (2**18 pixels) through an exported DataLab: no guard on the batch
    size, and the one-pass conversion gives what the chunked one does."""
    data_lab = DataLab().eval()
    program = torch.export.export(data_lab, (torch.rand(2, 3, 96, 96),),
                                  dynamic_shapes=({0: torch.export.Dim('batch', max=1024)},))
    rgb = torch.rand(40, 3, 96, 96)  # 40 x 96 x 96 = 1.4 chunks
    torch.testing.assert_close(program.module()(rgb), data_lab(rgb), rtol=0, atol=1e-5)


def test_guided_filter_traces_with_a_dynamic_size_and_the_same_numbers():
    """The guided filter's cell means are matrix products in a traced graph: the same as eager's pooling."""
    upsample = splitbrain_hub.ops.GuidedFilter()

    class Upsample(torch.nn.Module):
        def forward(self, ab, lightness):
            return upsample(ab, lightness)

    batch, Dim = torch.export.Dim('batch'), torch.export.Dim
    grid = {0: batch, 2: Dim('h', min=2), 3: Dim('w', min=2)}
    full = {0: batch, 2: Dim('height', min=2, max=4096), 3: Dim('width', min=2, max=4096)}
    program = torch.export.export(Upsample(), (torch.rand(3, 2, 6, 7), torch.rand(3, 1, 50, 61) * 100),
                                  dynamic_shapes=(grid, full))
    ab, lightness = torch.randn(2, 2, 5, 9) * 30, photos(2, (101, 203))[:, :1] * 100
    # Rounding only (summation order; the filter's variance amplifies it): 0.0026 Lab units measured.
    torch.testing.assert_close(program.module()(ab, lightness), upsample(ab, lightness), rtol=0, atol=0.01)


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('kwargs, message', [
    (dict(opset=17), r'opset: expected an int in \[18, 23\], got 17'),
    (dict(opset='18'), "got '18'"),
    (dict(graphs=('colorize', 'nope')), 'graphs: expected names from'),
    (dict(graphs='colorize'), 'graphs: expected names from'),
])
def test_bad_arguments(model, tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        export.export_onnx(model, tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


def test_bad_model_and_folder(model, tmp_path):
    with pytest.raises(InputError, match='model: expected a SplitBrainAlexNet, got Linear'):
        export.export_onnx(torch.nn.Linear(2, 2), tmp_path)
    (tmp_path / 'file').write_text('x')
    with pytest.raises(InputError, match='out_dir: expected a folder, got a file'):
        export.export_programs(model, tmp_path / 'file')
    with pytest.raises(InputError, match='model: expected a half seeing Lab channels'):
        export.export_onnx(timm.create_model('alexnet_lab'), tmp_path)


def test_onnx_export_says_how_to_install_onnxscript(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxscript', None)  # import onnxscript now fails
    with pytest.raises(splitbrain_hub.SplitBrainError, match=r"pip install 'splitbrain-hub\[export\]'"):
        export.export_onnx(model, tmp_path)


def test_web_needs_onnxruntime_web(model, tmp_path):
    with pytest.raises(InputError, match="ort_dist: expected onnxruntime-web's dist folder .* got .* without"):
        export.export_web(model, tmp_path / 'site', ort_dist=tmp_path)
    assert not (tmp_path / 'site').exists()


# --- command line ---------------------------------------------------------------------------------

def test_cli_bad_opset(weights, tmp_path, capsys):
    command = ['export', 'onnx', '-o', str(tmp_path), '--weights', str(weights), '--opset', '7']
    assert cli.main(command) == cli.EXIT_USAGE
    assert 'opset: expected an int in [18, 23], got 7' in capsys.readouterr().err
