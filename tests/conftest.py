import importlib
import os

import pytest
import torch
from fake_hub import FakeHub


@pytest.fixture(params=['cpu', 'cuda'])
def device(request) -> torch.device:
    """Run a test on the CPU and, where one is available, on a CUDA GPU."""
    if request.param == 'cuda' and not torch.cuda.is_available():
        pytest.skip('CUDA is not available')
    return torch.device(request.param)


@pytest.fixture
def fake_hub():
    """A Hugging Face Hub stand-in on 127.0.0.1 (see tests/fake_hub.py); fails the test on requests it cannot answer."""
    with FakeHub() as hub:
        yield hub
    assert not hub.unknown, f'huggingface_hub made requests the fake Hub does not serve: {hub.unknown}'


@pytest.fixture
def hf_env(monkeypatch, tmp_path):
    """``hf_env(HF_ENDPOINT=..., HF_HUB_OFFLINE='1', ...)`` sets huggingface_hub's variables as a user would.

    huggingface_hub reads its environment once, when it is imported: after each change its ``constants``
    module is reloaded, and its HTTP session closed (proxies are read when the session is made). The
    test starts from a clean slate (no HF_* or proxy variables, an empty HF_HOME) and everything is
    restored afterwards.
    """
    from huggingface_hub import close_session, constants

    def refresh():
        importlib.reload(constants)
        close_session()

    def apply(**variables):
        for name, value in variables.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))
        refresh()

    for name in list(os.environ):
        if name.startswith('HF_') or name.lower() in ('http_proxy', 'https_proxy', 'all_proxy', 'no_proxy'):
            monkeypatch.delenv(name)
    apply(HF_HOME=tmp_path / 'hf-home')
    yield apply
    monkeypatch.undo()
    refresh()


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """A randomly initialised checkpoint at the network's smallest input size, standing in for the release
    where a test checks files, messages and exit codes, not colour."""
    import timm

    import splitbrain_hub
    torch.manual_seed(0)
    model = timm.create_model('splitbrain_alexnet', pretrained_cfg_overlay=dict(input_size=(3, 96, 96)))
    folder = tmp_path_factory.mktemp('ckpt')
    splitbrain_hub.save_pretrained(model, folder)
    return folder


@pytest.fixture(scope='session')
def shipped_model():
    """The shipped weights, fp32, eval mode (shared: tests must not change it)."""
    import splitbrain_hub
    from splitbrain_hub.hub import shipped_weights_path
    return splitbrain_hub.load_pretrained(shipped_weights_path('splitbrain_alexnet', 'tinyimagenet_128')).eval()


@pytest.fixture(scope='session')
def shipped_onnx(shipped_model, tmp_path_factory):
    """Every ONNX graph of the shipped weights, exported once for the session (about 5 s a graph on 2 cores):
    test_export checks them against PyTorch, test_export_web takes the float32 colorizer as its reference."""
    from splitbrain_hub.deploy import export
    return export.export_onnx(shipped_model, tmp_path_factory.mktemp('shipped-onnx'))
