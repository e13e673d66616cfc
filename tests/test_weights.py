"""Saving and loading: safetensors + config.json, and each pretrained source, all offline."""
import json
import logging
import socket
import time
from pathlib import Path

import pytest
import timm
import torch

from splitbrain_hub import WeightsError, load_pretrained, save_pretrained
from splitbrain_hub import hub as weights_hub

HUB_ID = 'splitbrain-hub/splitbrain_alexnet.tinyimagenet_128'


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model('splitbrain_alexnet').eval()
    path = save_pretrained(model, tmp_path / 'export')
    return model, path


@pytest.fixture
def no_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_hub.sources, 'SHIPPED_DIR', tmp_path / 'no-shipped-weights')


@pytest.fixture
def offline(hf_env):
    hf_env(HF_HUB_OFFLINE='1')


@pytest.fixture
def shipped(saved, tmp_path, monkeypatch):
    """The saved model stands in for the shipped release file."""
    _, path = saved
    folder = tmp_path / 'shipped'
    folder.mkdir()
    (folder / 'splitbrain_alexnet.tinyimagenet_128.safetensors').write_bytes(path.read_bytes())
    monkeypatch.setattr(weights_hub.sources, 'SHIPPED_DIR', folder)


def _same_outputs(a, b):
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for name, out in a.forward_pretext(x).items():
            torch.testing.assert_close(out, b.forward_pretext(x)[name], rtol=0, atol=0)


def _closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


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


def test_local_dir_loads_a_save_pretrained_folder(saved, offline, no_shipped):
    """timm's 'local-dir:' source: a folder with config.json and model.safetensors."""
    model, path = saved
    loaded = timm.create_model('local-dir:' + str(path.parent), pretrained=True).eval()
    assert loaded.pretrained_cfg['file'] == str(path)
    _same_outputs(model, loaded)


def test_local_dir_without_safetensors_is_refused(saved, tmp_path, offline):
    _, path = saved
    folder = tmp_path / 'pickled'
    folder.mkdir()
    (folder / 'config.json').write_text((path.parent / 'config.json').read_text())
    torch.save({'x': torch.zeros(1)}, folder / 'pytorch_model.bin')
    with pytest.raises(WeightsError, match=r'local-dir .*pickled.*expected an existing \.safetensors file.*model\.safetensors'):
        timm.create_model('local-dir:' + str(folder), pretrained=True)


def test_hub_download_then_offline_from_the_cache(saved, fake_hub, hf_env, no_shipped, tmp_path):
    """hf_hub_id through huggingface_hub: downloaded into HF_HOME's cache, then read from it with HF_HUB_OFFLINE=1."""
    model, path = saved
    fake_hub.add_commit('someone/splitbrain', {'model.safetensors': path.read_bytes(),
                                                'config.json': (path.parent / 'config.json').read_bytes()})
    hf_env(HF_ENDPOINT=fake_hub.url)
    overlay = dict(hf_hub_id='someone/splitbrain')
    downloaded = timm.create_model('splitbrain_alexnet', pretrained=True, pretrained_cfg_overlay=overlay).eval()
    cached = Path(downloaded.pretrained_cfg['file'])
    assert cached.is_relative_to(tmp_path / 'hf-home' / 'hub' / 'models--someone--splitbrain' / 'snapshots')
    assert ('GET', '/someone/splitbrain/resolve/main/model.safetensors') in fake_hub.requests
    _same_outputs(model, downloaded)

    # timm's own Hub source: config.json and weights from the repo
    from_hub = timm.create_model('hf-hub:someone/splitbrain', pretrained=True).eval()
    _same_outputs(model, from_hub)

    # timm's cache_dir argument is the HF cache to use
    elsewhere = timm.create_model('splitbrain_alexnet', pretrained=True, pretrained_cfg_overlay=overlay,
                                  cache_dir=tmp_path / 'other-cache')
    assert Path(elsewhere.pretrained_cfg['file']).is_relative_to(tmp_path / 'other-cache')

    hf_env(HF_HUB_OFFLINE='1')
    requests_before = len(fake_hub.requests)
    offline = timm.create_model('splitbrain_alexnet', pretrained=True, pretrained_cfg_overlay=overlay).eval()
    assert offline.pretrained_cfg['file'] == str(cached)
    assert len(fake_hub.requests) == requests_before, 'HF_HUB_OFFLINE=1 makes no request'
    _same_outputs(model, offline)


def test_hub_through_a_proxy(saved, fake_hub, hf_env, no_shipped):
    """HTTP_PROXY is honoured: the Hub's name does not even resolve, only the proxy can reach it."""
    model, path = saved
    fake_hub.add_commit('someone/splitbrain', {'model.safetensors': path.read_bytes()})
    hf_env(HF_ENDPOINT='http://hub.example.invalid', HTTP_PROXY=fake_hub.url)
    loaded = timm.create_model('splitbrain_alexnet', pretrained=True,
                               pretrained_cfg_overlay=dict(hf_hub_id='someone/splitbrain')).eval()
    _same_outputs(model, loaded)
    assert ('GET', '/someone/splitbrain/resolve/main/model.safetensors') in fake_hub.requests


@pytest.mark.parametrize('hub', ['HF_HUB_OFFLINE=1', 'connection refused', 'no such repo'])
def test_release_repo_miss_falls_back_to_shipped_with_a_warning(saved, shipped, fake_hub, hf_env, caplog, hub):
    model, _ = saved
    if hub == 'HF_HUB_OFFLINE=1':
        hf_env(HF_HUB_OFFLINE='1', HF_ENDPOINT=fake_hub.url)
    elif hub == 'connection refused':
        hf_env(HF_ENDPOINT=f'http://127.0.0.1:{_closed_port()}')
    else:
        hf_env(HF_ENDPOINT=fake_hub.url)  # the release repo is not on this Hub
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger='splitbrain_hub.hub.sources'):
        loaded = timm.create_model('splitbrain_alexnet', pretrained=True).eval()
    assert time.monotonic() - start < 5
    _same_outputs(model, loaded)
    warnings = [r for r in caplog.records if r.name == 'splitbrain_hub.hub.sources']
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert HUB_ID in warnings[0].getMessage() and 'shipped' in warnings[0].getMessage()
    heads = [r for r in fake_hub.requests if r[0] == 'HEAD']
    assert heads == ([('HEAD', f'/{HUB_ID}/resolve/main/model.safetensors')] if hub == 'no such repo' else [])


@pytest.mark.parametrize('hub', ['HF_HUB_OFFLINE=1', 'connection refused', 'no such repo'])
def test_another_repo_is_never_replaced_by_the_shipped_weights(fake_hub, hf_env, hub):
    assert weights_hub.shipped_weights_path('splitbrain_alexnet', 'tinyimagenet_128').is_file()
    if hub == 'HF_HUB_OFFLINE=1':
        hf_env(HF_HUB_OFFLINE='1')
        reason = 'OfflineModeIsEnabled'
    elif hub == 'connection refused':
        hf_env(HF_ENDPOINT=f'http://127.0.0.1:{_closed_port()}')
        reason = 'ConnectError'
    else:
        hf_env(HF_ENDPOINT=fake_hub.url)
        reason = 'RepositoryNotFoundError'
    with pytest.raises(WeightsError, match=rf"'someone/other-weights'.*{reason}.*stand in only for the release "
                                           rf"repo '{HUB_ID}'"):
        timm.create_model('splitbrain_alexnet', pretrained=True,
                          pretrained_cfg_overlay=dict(hf_hub_id='someone/other-weights'))


def test_an_unresponsive_hub_is_bounded_by_hf_hub_etag_timeout(saved, shipped, hf_env, caplog):
    """A Hub that accepts connections and never answers: the wait is huggingface_hub's HF_HUB_ETAG_TIMEOUT."""
    model, _ = saved
    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen()  # the kernel accepts connections; nothing ever reads or answers
        # HF_HUB_DISABLE_TELEMETRY: huggingface_hub >= 2 otherwise first asks the endpoint for its agent
        # registry (a fixed 3 s timeout), see the README.
        hf_env(HF_ENDPOINT=f'http://127.0.0.1:{silent.getsockname()[1]}', HF_HUB_ETAG_TIMEOUT='1',
               HF_HUB_DISABLE_TELEMETRY='1')
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger='splitbrain_hub.hub.sources'):
            loaded = timm.create_model('splitbrain_alexnet', pretrained=True).eval()
        elapsed = time.monotonic() - start
    assert 1 <= elapsed < 5, elapsed
    assert 'Timeout' in caplog.text
    _same_outputs(model, loaded)


def test_malformed_hub_id_and_pickled_hub_file_are_refused(offline):
    with pytest.raises(WeightsError, match=r"hf_hub_id: expected a Hub repo id 'owner/name'.*got 'a/b/c'"):
        timm.create_model('splitbrain_alexnet', pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id='a/b/c'))
    with pytest.raises(WeightsError, match=r"hf_hub_filename: expected a \.safetensors file.*got 'pytorch_model\.bin'"):
        timm.create_model('splitbrain_alexnet', pretrained=True,
                          pretrained_cfg_overlay=dict(hf_hub_filename='pytorch_model.bin'))


def test_no_weights_anywhere_says_where_it_looked(offline, no_shipped):
    with pytest.raises(WeightsError, match='looked in.*Hub.*shipped file'):
        timm.create_model('splitbrain_alexnet', pretrained=True)


def test_pickles_are_refused(tmp_path):
    bad = tmp_path / 'model.pth'
    torch.save({'x': torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match='safetensors'):
        timm.create_model('splitbrain_alexnet', pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))
    with pytest.raises(WeightsError, match='safetensors'):
        weights_hub.load_safetensors(bad)


def test_corrupt_file(tmp_path):
    bad = tmp_path / 'model.safetensors'
    bad.write_bytes(b'\x00' * 100)
    with pytest.raises(WeightsError, match=r'model\.safetensors: not a safetensors file: expected a JSON header'):
        weights_hub.load_safetensors(bad)


def test_mismatch_names_the_keys(tmp_path):
    unsplit = timm.create_model('alexnet_lab', pretext={'lab': 'lab_reg'})
    path = save_pretrained(unsplit, tmp_path)
    with pytest.raises(WeightsError, match=r'model\.safetensors: expected the tensors of a SplitBrainAlexNet .*\d+ '
                                           r'\(features\.branches\.ab_half.* missing, \d+ \(features\.branches\.lab'):
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
