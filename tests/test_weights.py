"""Saving and loading: safetensors + config.json, and each pretrained source, all offline."""
import json
import logging

import pytest
import timm
import torch

from splitbrain_hub import WeightsError, load_pretrained, save_pretrained
from splitbrain_hub import weights

HUB_ID = 'splitbrain-hub/splitbrain_alexnet.tinyimagenet_128'


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model('splitbrain_alexnet').eval()
    path = save_pretrained(model, tmp_path / 'export')
    return model, path


@pytest.fixture
def no_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, 'SHIPPED_DIR', tmp_path / 'no-shipped-weights')


@pytest.fixture
def offline(monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'empty-hf-cache'))


def _same_outputs(a, b):
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for name, out in a.forward_pretext(x).items():
            torch.testing.assert_close(out, b.forward_pretext(x)[name], rtol=0, atol=0)


def test_export_layout(saved):
    model, path = saved
    assert path.name == 'model.safetensors'
    config = json.loads((path.parent / 'config.json').read_text())
    assert config['architecture'] == 'splitbrain_alexnet'
    assert config['model_args'] == json.loads(json.dumps(model.config()))
    assert config['pretrained_cfg']['input_size'] == [3, 128, 128]
    assert not list(path.parent.glob('*.tmp')), 'no temporary files left behind'


def test_load_from_named_file(saved, offline, no_shipped):
    model, path = saved
    loaded = timm.create_model('splitbrain_alexnet', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    _same_outputs(model, loaded.eval())
    _same_outputs(model, load_pretrained(path.parent).eval())


def test_load_from_hub_cache(saved, monkeypatch, tmp_path, no_shipped):
    """A repo already in the HF cache loads with HF_HUB_OFFLINE=1, as huggingface_hub lays it out."""
    from huggingface_hub import constants
    model, path = saved
    cache = tmp_path / 'hf-cache'
    repo = cache / ('models--' + HUB_ID.replace('/', '--'))
    snapshot = repo / 'snapshots' / ('0' * 40)
    snapshot.mkdir(parents=True)
    (snapshot / 'model.safetensors').write_bytes(path.read_bytes())
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text('0' * 40)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    _same_outputs(model, timm.create_model('splitbrain_alexnet', pretrained=True).eval())


@pytest.mark.parametrize('hub', ['offline', 'unreachable'])
def test_hub_miss_falls_back_to_shipped(saved, monkeypatch, tmp_path, caplog, hub):
    from huggingface_hub import constants
    model, path = saved
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'empty-hf-cache'))
    if hub == 'offline':
        monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    else:
        monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
        monkeypatch.setattr(constants, 'ENDPOINT', 'https://hub.invalid')  # DNS fails at once, never hangs
    shipped = tmp_path / 'shipped'
    shipped.mkdir()
    (shipped / 'splitbrain_alexnet.tinyimagenet_128.safetensors').write_bytes(path.read_bytes())
    monkeypatch.setattr(weights, 'SHIPPED_DIR', shipped)
    with caplog.at_level(logging.INFO, logger='splitbrain_hub.weights'):
        loaded = timm.create_model('splitbrain_alexnet', pretrained=True).eval()
    _same_outputs(model, loaded)
    assert [r for r in caplog.records if 'shipped' in r.getMessage()], 'the fallback is logged once'


def test_no_weights_anywhere_says_where_it_looked(offline, no_shipped):
    with pytest.raises(WeightsError, match='looked in.*Hub.*shipped file'):
        timm.create_model('splitbrain_alexnet', pretrained=True)


def test_pickles_are_refused(tmp_path):
    bad = tmp_path / 'model.pth'
    torch.save({'x': torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match='safetensors'):
        timm.create_model('splitbrain_alexnet', pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))
    with pytest.raises(WeightsError, match='safetensors'):
        weights.load_safetensors(bad)


def test_corrupt_file(tmp_path):
    bad = tmp_path / 'model.safetensors'
    bad.write_bytes(b'\x00' * 100)
    with pytest.raises(WeightsError, match='not a readable safetensors'):
        weights.load_safetensors(bad)


def test_mismatch_names_the_keys(tmp_path):
    unsplit = timm.create_model('alexnet_lab', pretext={'lab': 'lab_reg'})
    path = save_pretrained(unsplit, tmp_path)
    with pytest.raises(WeightsError, match=r"missing \[.*l_half.*unexpected \[.*branches\.lab"):
        timm.create_model('splitbrain_alexnet', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_fp16_export_loads_back_to_fp32(tmp_path):
    model = timm.create_model('splitbrain_alexnet').eval()
    path = save_pretrained(model, tmp_path, dtype=torch.float16)
    loaded = load_pretrained(path).eval()
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        ref, out = model.forward_pretext(x)['l_half'], loaded.forward_pretext(x)['l_half']
    assert (ref - out).abs().max() < 1e-2 * ref.abs().max()


def test_fine_tuning_classifier_from_pretrained(saved, offline, no_shipped):
    model, path = saved
    loaded = timm.create_model('splitbrain_alexnet', pretrained=True, num_classes=5, in_chans=1,
                               pretrained_cfg_overlay=dict(file=str(path)))
    torch.testing.assert_close(loaded.features.branches['l_half'].conv1.weight,
                               model.features.branches['l_half'].conv1.weight)
    assert loaded(torch.rand(1, 1, 128, 128)).shape == (1, 5)
    features = timm.create_model('splitbrain_alexnet', pretrained=True, features_only=True,
                                 pretrained_cfg_overlay=dict(file=str(path)))
    assert features.feature_info.channels() == [96, 256, 384, 384, 256]
