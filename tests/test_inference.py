"""inference.py: colorize, predict_lightness, extract_features.

The models here are randomly initialised or have their pretext heads set by hand so the decoded values are
known: the tests check kinds, shapes, resolution, decoding and errors, never the release's quality.
"""
import os

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import splitbrain_hub
from splitbrain_hub import (
    InputError,
    WeightsError,
    colorize,
    extract_features,
    inference,
    predict_lightness,
    prediction,
)
from splitbrain_hub.inference import load_model, resolve_device
from splitbrain_hub.ops.bins import ab_bin_centers, l_bin_centers
from splitbrain_hub.ops.color import lab_to_rgb, rgb_to_lab

# The smallest input the network takes keeps the tests fast; colorize reads it from the model's cfg.
SMALL = dict(pretrained_cfg_overlay=dict(input_size=(3, 96, 96)))


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return timm.create_model('splitbrain_alexnet', **SMALL).eval()


def _fixed_head(model, half, centers, value):
    """Make ``half``'s classification head predict the bin at ``value`` everywhere (weights 0, bias peaked)."""
    index = int((centers - torch.tensor(value)).abs().sum(1).argmin())
    head = model.pretext[half]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-50.0)
        head.bias[index] = 50.0
    return model


@pytest.fixture(scope='module')
def ab_model():
    """A model whose L half predicts a = 20, b = -30 everywhere and whose ab half predicts L = 49."""
    model = timm.create_model('splitbrain_alexnet', **SMALL).eval()
    _fixed_head(model, 'l_half', ab_bin_centers(), [20.0, -30.0])
    return _fixed_head(model, 'ab_half', l_bin_centers(), [49.0])


def _photo(height=48, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- colorize: kinds in, same kinds out -----------------------------------------------------------

def test_colorize_pil_keeps_size_and_gives_rgb(model):
    out = colorize(Image.fromarray(_photo()), model=model)
    assert isinstance(out, Image.Image) and out.mode == 'RGB' and out.size == (64, 48)


def test_colorize_path_gives_pil(model, tmp_path):
    Image.fromarray(_photo()).convert('L').save(tmp_path / 'grey.jpg')
    out = colorize(tmp_path / 'grey.jpg', model=model)
    assert isinstance(out, Image.Image) and out.mode == 'RGB' and out.size == (64, 48)


def test_colorize_rgba_keeps_alpha(model):
    alpha = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    out = colorize(Image.fromarray(np.dstack([_photo(), alpha])), model=model)
    assert out.mode == 'RGBA'
    np.testing.assert_array_equal(np.asarray(out)[:, :, 3], alpha)


@pytest.mark.parametrize('shape', [(48, 64), (48, 64, 3), (48, 64, 1)])
def test_colorize_array_gives_rgb_array_of_same_dtype(model, shape):
    array = _photo()[:, :, :1].reshape(shape) if len(shape) != 3 or shape[2] == 1 else _photo()
    out = colorize(array, model=model)
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3)
    out = colorize(array.astype(np.float32) / 255, model=model)
    assert out.dtype == np.float32 and out.shape == (48, 64, 3) and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize('dtype', [torch.uint8, torch.float32])
def test_colorize_tensor_keeps_rank_dtype_and_is_autograd_usable(model, dtype):
    batch = (torch.rand(3, 1, 40, 50) * (255 if dtype == torch.uint8 else 1)).to(dtype)
    out = colorize(batch, model=model)
    assert out.shape == (3, 3, 40, 50) and out.dtype == dtype
    assert colorize(batch[0], model=model).shape == (3, 40, 50)
    if dtype.is_floating_point:
        weight = torch.ones((), requires_grad=True)
        (out * weight).sum().backward()  # an inference-mode tensor would refuse this
        assert weight.grad is not None


def test_colorize_list_gives_list_of_each_kind(model):
    out = colorize([Image.fromarray(_photo()), _photo(20, 30), torch.rand(3, 33, 44)], model=model)
    assert isinstance(out, list) and isinstance(out[0], Image.Image)
    assert out[1].shape == (20, 30, 3) and out[2].shape == (3, 33, 44)


def test_batch_equals_one_by_one(model):
    images = [_photo(seed=1), _photo(30, 90, seed=2)]
    together = colorize(images, model=model)
    for image, result in zip(images, together):
        np.testing.assert_array_equal(colorize(image, model=model), result)


@pytest.mark.parametrize('predict', [colorize, predict_lightness])
def test_a_long_list_is_read_and_predicted_batch_size_inputs_at_a_time(model, monkeypatch, predict):
    images = [_photo(seed=i) for i in range(5)]
    all_at_once = predict(images, model=model, batch_size=8, amp='off')  # bf16 results depend on the batch
    loaded, forwarded = [], []
    load_batches, forward_pretext = inference.load_batches, model.forward_pretext
    monkeypatch.setattr(inference, 'load_batches', lambda chunk, start=0: loaded.append(len(chunk)) or load_batches(chunk, start))
    monkeypatch.setattr(model, 'forward_pretext', lambda x, **kw: forwarded.append(x.shape[0]) or forward_pretext(x, **kw))
    in_batches = predict(images, model=model, batch_size=2, amp='off')
    assert loaded == forwarded == [2, 2, 1]  # never more than one batch of full-resolution images decoded
    for got, want in zip(in_batches, all_at_once, strict=True):
        np.testing.assert_array_equal(got, want)


def test_errors_in_a_later_batch_name_the_input_by_its_place_in_the_whole_list(model):
    images = [_photo(), _photo(), _photo(), np.zeros((1, 1, 3), np.uint8)]
    with pytest.raises(InputError, match=r'^image\[3\]: expected width and height of at least 2'):
        colorize(images, model=model, batch_size=2)
    with pytest.raises(InputError, match='batch_size: expected an int >= 1, got 0'):
        colorize(images, model=model, batch_size=0)


# --- colorize: reference values -------------------------------------------------------------------

@pytest.mark.parametrize('upsample', ['bilinear', 'guided'])
def test_colorize_recombines_predicted_ab_with_full_resolution_lightness(ab_model, upsample):
    # Fine detail (a 1-pixel checkerboard of two greys) at full resolution, ab = (20, -30) predicted: the guided
    # filter finds no colour that varies with L, so it too keeps the prediction, and the detail stays grey-level.
    grey = torch.where((torch.arange(96)[:, None] + torch.arange(128)) % 2 == 0, 0.35, 0.6)
    out = colorize(grey.expand(1, 3, -1, -1).contiguous(), model=ab_model, upsample=upsample)
    lab_in, lab_out = rgb_to_lab(grey.expand(1, 3, -1, -1)), rgb_to_lab(out)
    torch.testing.assert_close(lab_out[:, 0], lab_in[:, 0], atol=1e-3, rtol=0)  # every pixel's L kept
    torch.testing.assert_close(lab_out[:, 1:], torch.tensor([20.0, -30.0]).view(1, 2, 1, 1).expand(1, 2, 96, 128),
                               atol=0.05, rtol=0)


@pytest.mark.parametrize('predict, kwargs, atol', [
    (colorize, dict(upsample='bilinear'), 1e-6),  # vector-width rounding
    (colorize, dict(upsample='guided'), 1e-5),  # the guided filter's slope a multiplies L's rounding
    (predict_lightness, {}, 1e-6),
])
def test_stripes_give_the_same_result_as_whole_images(model, monkeypatch, predict, kwargs, atol):
    images = torch.rand(2, 3, 37, 53)
    whole = predict(images, model=model, amp='off', **kwargs)  # fp32: bf16 kernels may round differently call to call
    monkeypatch.setattr(splitbrain_hub.prediction, 'PIXELS_PER_PASS', 300)  # 2 x 53 x 2 rows: 19 stripes
    torch.testing.assert_close(predict(images, model=model, amp='off', **kwargs), whole, atol=atol, rtol=0)


def test_colour_photo_is_colorized_from_its_lightness_alone(model):
    photo = torch.rand(1, 3, 40, 50)
    lab = rgb_to_lab(photo)
    grey = lab_to_rgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], 1))
    # fp32: in bf16 the tiny L difference left by the round trip can flip a rounding inside the network
    torch.testing.assert_close(colorize(photo, model=model, amp='off'), colorize(grey, model=model, amp='off'),
                               atol=2e-4, rtol=0)


def test_regression_heads_are_decoded_by_the_regression_scale():
    model = timm.create_model('splitbrain_alexnet', pretext={'l_half': 'ab_reg', 'ab_half': 'l_reg'}, **SMALL).eval()
    with torch.no_grad():
        for half, bias in (('l_half', [0.10, 0.25]), ('ab_half', [0.60])):
            model.pretext[half].weight.zero_()
            model.pretext[half].bias.copy_(torch.tensor(bias))
    # fp32: in bf16 the head's 0.6 would be 0.6016, i.e. L 60.16 (well within an 8-bit level, not within 0.05).
    lab = rgb_to_lab(colorize(torch.full((1, 3, 32, 32), 0.5), model=model, amp='off'))
    torch.testing.assert_close(lab[0, 1:, 16, 16], torch.tensor([10.0, 25.0]), atol=0.05, rtol=0)
    grey = predict_lightness(torch.rand(1, 3, 32, 32), model=model, amp='off')
    torch.testing.assert_close(rgb_to_lab(grey.expand(1, 3, -1, -1))[0, 0], torch.full((32, 32), 60.0), atol=0.05, rtol=0)


def test_upsample_options(model):
    from splitbrain_hub.ops.upsample import GuidedFilter
    photo = torch.rand(2, 3, 60, 80, generator=torch.Generator().manual_seed(4))
    bilinear, guided = (colorize(photo, model=model, upsample=u, amp='off') for u in ('bilinear', 'guided'))
    custom = colorize(photo, model=model, upsample=GuidedFilter(), amp='off')
    torch.testing.assert_close(custom, guided, atol=0, rtol=0)  # 'guided' is GuidedFilter's defaults
    assert (bilinear - guided).abs().max() > 1e-3  # the upsampler is really used


@pytest.mark.parametrize('upsample', ['nearest', None, 2])
def test_bad_upsample(model, upsample):
    with pytest.raises(InputError, match=r"upsample: expected one of \('guided', 'bilinear'\)"):
        colorize(_photo(), model=model, upsample=upsample)


def test_lower_temperature_is_more_saturated(model):
    photo = _photo(64, 64)
    chroma = [np.hypot(*rgb_to_lab(colorize(torch.from_numpy(photo).permute(2, 0, 1) / 255.0, model=model,
                                           temperature=t))[1:].numpy()).mean() for t in (0.1, 1.0)]
    assert chroma[0] > chroma[1]


def test_training_mode_is_restored_and_dropout_is_off():
    model = timm.create_model('splitbrain_alexnet', drop_rate=0.5, **SMALL).train()
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # in training mode this model's dropout changes the prediction from call to call
        network_input = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
        assert not torch.equal(*(model.forward_pretext(network_input)['l_half'] for _ in range(2)))
    first, second = (colorize(image, model=model) for _ in range(2))
    assert model.training
    torch.testing.assert_close(first, second, rtol=0, atol=0)


# --- predict_lightness ----------------------------------------------------------------------------

def test_predict_lightness_gives_grey_at_original_resolution(ab_model):
    out = predict_lightness(Image.fromarray(_photo(50, 70)), model=ab_model)
    assert out.mode == 'L' and out.size == (70, 50)
    expected = lab_to_rgb(torch.tensor([49.0, 0.0, 0.0]).view(1, 3, 1, 1))[0, 0, 0, 0].item() * 255
    assert np.abs(np.asarray(out).astype(float) - expected).max() <= 1
    assert predict_lightness(_photo(), model=ab_model).shape == (48, 64)
    assert predict_lightness(torch.rand(2, 4, 20, 30), model=ab_model).shape == (2, 2, 20, 30)  # grey + alpha


# --- argument errors ------------------------------------------------------------------------------

@pytest.mark.parametrize('temperature', [0, -1, 0.001, 11, float('nan'), True, '0.4'])
def test_bad_temperature(model, temperature):
    with pytest.raises(InputError, match=r'temperature: expected a number in \[0.01, 10.0\], got'):
        colorize(_photo(), model=model, temperature=temperature)


@pytest.mark.parametrize('size', [0, -5, 10, 5000, (96,), 'big', 96.0])
def test_bad_size(model, size):
    with pytest.raises(InputError, match=r'size: expected None, an int or \(height, width\) with sides in \[96, 2048\]'):
        colorize(_photo(), model=model, size=size)


def test_other_network_sizes_work(model):
    assert colorize(_photo(), model=model, size=(96, 160)).shape == (48, 64, 3)


def _network_inputs(model, monkeypatch):
    """The shapes of what the network is given, recorded as colorize calls it."""
    shapes, forward = [], model.forward_pretext
    monkeypatch.setattr(model, 'forward_pretext', lambda x, **kw: shapes.append(tuple(x.shape)) or forward(x, **kw))
    return shapes


@pytest.mark.parametrize('size, expected', [(None, (96, 144)), (120, (120, 180)), ((100, 110), (100, 110))])
def test_network_sees_the_photo_at_its_aspect_ratio(model, monkeypatch, size, expected):
    shapes = _network_inputs(model, monkeypatch)
    photo = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)  # 3:2, like Kodak
    assert colorize(photo, model=model, size=size).shape == (40, 60, 3)
    assert shapes == [(1, 3, *expected)]


def test_photos_of_one_aspect_share_a_forward_pass(model, monkeypatch):
    shapes = _network_inputs(model, monkeypatch)
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(40, 60, 3), (30, 30, 3), (80, 120, 3)]]
    outputs = colorize(photos, model=model, amp='off')
    assert [o.shape for o in outputs] == [p.shape for p in photos]
    assert sorted(shapes) == [(1, 3, 96, 96), (2, 3, 96, 144)]
    # grouping changes nothing but float rounding (a batch of 2 may take other conv kernels): within 1 level
    for photo, output in zip(photos, outputs):
        alone = colorize(photo, model=model, amp='off')
        assert np.abs(alone.astype(int) - output.astype(int)).max() <= 1


@pytest.mark.parametrize('height, width, rule, expected', [
    (512, 768, 227, (227, 341)), (768, 512, 227, (341, 227)), (100, 100, 128, (128, 128)),
    (100, 5000, 227, (227, 11350)), (512, 768, (96, 96), (96, 96))])
def test_photo_network_size(height, width, rule, expected):
    assert prediction.photo_network_size(height, width, rule) == expected


def test_model_without_the_needed_half():
    unsplit = timm.create_model('alexnet_lab', pretext={'lab': 'lab_reg'})
    with pytest.raises(InputError, match=r'model: expected a half seeing Lab channels \(0,\) with a pretext head'):
        colorize(_photo(), model=unsplit)


def test_devices():
    assert resolve_device('cpu') == torch.device('cpu')
    assert resolve_device(None).type in ('cuda', 'mps', 'cpu')
    with pytest.raises(InputError, match="device: expected 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu0'"):
        resolve_device('gpu0')
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="device: expected an available device, got 'cuda'"):
            resolve_device('cuda')


def test_device_must_match_a_given_model(model):
    with pytest.raises(InputError, match=r"device: expected the device the given model is on \(cpu\), got 'meta'"):
        colorize(_photo(), model=model, device='meta')  # 'meta' exists everywhere, unlike a GPU


def test_colorize_on_each_device(model, device):
    out = colorize(torch.rand(1, 3, 40, 40, device=device), model=model.to(device))
    model.to('cpu')
    assert out.device.type == device.type and out.shape == (1, 3, 40, 40)


# --- the model cache and weights ------------------------------------------------------------------

def test_load_model_from_saved_folder_and_bare_file_is_cached(model, tmp_path):
    splitbrain_hub.save_pretrained(model, tmp_path / 'ckpt')
    loaded = load_model(tmp_path / 'ckpt', device='cpu')
    assert load_model(tmp_path / 'ckpt', device='cpu') is loaded and not loaded.training
    bare = tmp_path / 'bare' / 'weights.safetensors'
    bare.parent.mkdir()
    bare.write_bytes((tmp_path / 'ckpt' / 'model.safetensors').read_bytes())
    photo = _photo()
    assert load_model(bare).pretrained_cfg['input_size'] == (3, 128, 128)  # a bare file gets the default cfg
    np.testing.assert_array_equal(colorize(photo, model=load_model(bare), size=96), colorize(photo, model=model))
    np.testing.assert_array_equal(colorize(photo, model=loaded), colorize(photo, model=model))


def test_a_weights_file_replaced_in_place_is_loaded_again(model, ab_model, tmp_path):
    splitbrain_hub.save_pretrained(model, tmp_path / 'ckpt')
    first = load_model(tmp_path / 'ckpt', device='cpu')
    weights = tmp_path / 'ckpt' / 'model.safetensors'
    stamp = weights.stat().st_mtime_ns
    splitbrain_hub.save_pretrained(ab_model, tmp_path / 'ckpt')  # atomically replaced: a new file at the same path
    os.utime(weights, ns=(stamp + 10**9, stamp + 10**9))  # a later mtime even where the clock is coarse
    second = load_model(tmp_path / 'ckpt', device='cpu')
    assert second is not first and load_model(tmp_path / 'ckpt', device='cpu') is second
    torch.testing.assert_close(second.pretext['l_half'].bias, ab_model.pretext['l_half'].bias)


def test_missing_weights_are_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match=r'none\.safetensors: expected a save_pretrained folder or a \.safetensors file, '
                                            r'but it does not exist'):
        load_model(tmp_path / 'none.safetensors')


def test_default_model_without_shipped_weights_says_where_it_looked(monkeypatch, tmp_path, hf_env):
    from splitbrain_hub import hub
    hf_env(HF_HUB_OFFLINE='1')  # the Hub cannot give the release either
    monkeypatch.setattr(hub.sources, 'SHIPPED_DIR', tmp_path / 'not-shipped')
    monkeypatch.setattr(inference, '_model_cache', {})
    with pytest.raises(WeightsError, match=r'no pretrained weights for .*shipped file .*not-shipped'):
        colorize(_photo())


def test_default_pretrained_model_colorizes_the_sample_photo():
    from splitbrain_hub.hub import shipped_weights_path
    from splitbrain_hub.images import SAMPLE_PHOTO
    if not shipped_weights_path('splitbrain_alexnet', 'tinyimagenet_128').is_file():
        pytest.skip('no release weights shipped yet')
    out = colorize(SAMPLE_PHOTO, device='cpu')
    assert out.mode == 'RGB' and out.size == Image.open(SAMPLE_PHOTO).size
    assert load_model(device='cpu') is load_model(device='cpu')


# --- extract_features -----------------------------------------------------------------------------

def test_feature_shapes_at_227(model):
    features = extract_features(torch.rand(2, 3, 227, 227), model=model, size=227)
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        'conv1': (2, 96, 55, 55), 'conv2': (2, 256, 27, 27), 'conv3': (2, 384, 13, 13),
        'conv4': (2, 384, 13, 13), 'conv5': (2, 256, 13, 13)}


def test_features_equal_the_models_intermediates(model):
    images = torch.rand(5, 3, 128, 128)
    features = extract_features(images, ['conv4', 'conv2'], model=model, size=128, batch_size=2)
    assert list(features) == ['conv4', 'conv2']
    with torch.no_grad():
        conv2, conv4 = model.forward_intermediates(images, indices=[1, 3], intermediates_only=True)
    torch.testing.assert_close(features['conv4'], conv4)
    torch.testing.assert_close(features['conv2'], conv2)


def test_features_pool_resizes_and_mixed_inputs_are_resized(model):
    features = extract_features([_photo(), Image.fromarray(_photo(100, 80)).convert('L')], ['conv1', 'conv5'],
                                pool=(3, 4), model=model)
    assert features['conv1'].shape == (2, 96, 3, 4) and features['conv5'].shape == (2, 256, 3, 4)
    probe = torch.nn.Linear(256 * 12, 2)
    probe(features['conv5'].flatten(1)).sum().backward()  # usable as a linear probe's input
    assert probe.weight.grad is not None


@pytest.mark.parametrize('kwargs, message', [
    (dict(layers=['conv6']), r"layers: expected distinct names from \['conv1', .*\], got \['conv6'\]"),
    (dict(layers='conv1'), 'layers: expected distinct names'),
    (dict(layers=['conv1', 'conv1']), 'layers: expected distinct names'),
    (dict(layers=[]), 'layers: expected distinct names'),
    (dict(pool=0), r'pool: expected None, an int or \(height, width\) with sides >= 1, got 0'),
    (dict(pool=(2, 2, 2)), 'pool: expected None'),
    (dict(batch_size=0), 'batch_size: expected an int >= 1, got 0'),
])
def test_feature_argument_errors(model, kwargs, message):
    with pytest.raises(InputError, match=message):
        extract_features(_photo(), model=model, **kwargs)


# --- precision: the package picks it, whatever autocast the caller has on -------------------------

@pytest.mark.parametrize('predict', [colorize, predict_lightness])
def test_predictions_ignore_a_callers_autocast(model, predict):
    images = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    expected = predict(images, model=model, amp='off')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        inside = predict(images, model=model, amp='off')
        default = predict(images, model=model)
    assert inside.dtype == default.dtype == torch.float32
    torch.testing.assert_close(inside, expected, atol=1e-6, rtol=0)
    # bf16 network (where native): within an 8-bit level of fp32 on these random-weight predictions.
    torch.testing.assert_close(default, expected, atol=1 / 255, rtol=0)


def test_features_ignore_a_callers_autocast_and_bf16_is_on_request(model):
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    expected = extract_features(images, model=model)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        inside = extract_features(images, model=model)
    bf16 = extract_features(images, model=model, amp='bf16')
    for layer, value in expected.items():
        assert inside[layer].dtype == bf16[layer].dtype == torch.float32
        torch.testing.assert_close(inside[layer], value, atol=1e-6, rtol=1e-6)
        assert not torch.equal(bf16[layer], value)  # it did run in bf16 ...
        cosine = torch.nn.functional.cosine_similarity(bf16[layer].flatten(), value.flatten(), dim=0)
        assert cosine > 0.999, f'{layer}: {cosine:.5f}'  # ... and stays close


@pytest.mark.parametrize('amp', ['fp16', 'on', None])
def test_bad_amp(model, amp):
    for call in (colorize, predict_lightness, extract_features):
        with pytest.raises(InputError, match='amp: expected one of'):
            call(torch.rand(1, 3, 96, 96), model=model, amp=amp)


def test_shipped_model_in_bf16_changes_the_photo_by_at_most_one_level():
    """The rule that lets colorize default to bf16: 8-bit results within 1 level of fp32's on >= 99.9 % of
    pixels (checked on the Kodak photos by benchmarks/bench_precision.py; here on the shipped photo)."""
    from splitbrain_hub.images import SAMPLE_PHOTO
    photo = Image.open(SAMPLE_PHOTO)
    fp32, bf16 = (np.asarray(colorize(photo, device='cpu', amp=amp)).astype(int) for amp in ('off', 'bf16'))
    within = (np.abs(fp32 - bf16) <= 1).mean()
    assert within >= 0.999, f'{within:.5f} of values within 1 level'
