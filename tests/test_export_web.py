"""``splitbrain-hub export web``: the static folder colorizes a dropped photo in headless Chromium, served by a
plain static file server on loopback, and gives what onnxruntime in Python gives on the same graphs.

The shipped weights are exported (the page must give a colour photo, which a random model does not). Needs
Debian's Chromium and onnxruntime-web from ``npm ci`` in web/; without either the test skips, saying why.
"""
import base64
import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import splitbrain_hub
from splitbrain_hub import cli
from splitbrain_hub.deploy import export
from splitbrain_hub.hub import shipped_weights_path

ort = pytest.importorskip('onnxruntime', reason='the export tests need onnxruntime (pip install splitbrain-hub[test])')
skimage_data = pytest.importorskip('skimage.data', reason="the astronaut is scikit-image's (splitbrain-hub[test])")

CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']
# The page's float16 colorizer against the float32 one in Python, both rounded to 8 bits: at most one level apart
# in any channel (a value near a rounding boundary goes either way; in dark pixels one level is up to ~1.3 Lab units
# of ab), and a mean ab difference far below one Lab unit (0.014 measured with the 576,000-image release).
RGB_LEVELS = 1
AB_MEAN_TOLERANCE = 0.1
START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip(f'no Chromium at {CHROMIUM} (Debian: apt-get install -y chromium)')
    missing = [name for name in export.ORT_WEB_FILES if not (export.ORT_WEB_DIST / name).is_file()]
    if missing:
        pytest.skip(f'onnxruntime-web is not installed in {export.ORT_WEB_DIST} (run npm ci in web/): no {missing}')
    folder = tmp_path_factory.mktemp('site')
    weights = shipped_weights_path('splitbrain_alexnet', 'tinyimagenet_128')
    assert cli.main(['export', 'web', '-o', str(folder), '--weights', str(weights)]) == cli.EXIT_OK
    return folder


@pytest.fixture(scope='module')
def static_server(site):
    """``python -m http.server``: static files only, nothing the page could run on a server."""
    port = free_port()
    process = subprocess.Popen([sys.executable, '-m', 'http.server', str(port), '--bind', '127.0.0.1',
                                '--directory', str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f'http://127.0.0.1:{port}'
    process.terminate()
    process.wait(10)


def test_export_writes_a_static_folder(site):
    names = {p.relative_to(site).as_posix() for p in site.rglob('*')}
    assert {'index.html', 'colorize.js', 'config.json', 'prepare.onnx', 'colorize.onnx', 'recombine.onnx'} \
        | {f'ort/{Path(name).name}' for name in export.ORT_WEB_FILES} <= names
    assert not any(name.endswith('.tmp') for name in names)
    page = (site / 'index.html').read_text() + (site / 'colorize.js').read_text()
    assert 'http://' not in page and 'https://' not in page  # nothing from a CDN


def drop(page, path: Path) -> None:
    """Drop ``path`` on the page's drop zone, as a user dragging it from their files would."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle("""(data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'astronaut.png', { type: 'image/png' }));
        return transfer;
    }""", data)
    page.dispatch_event('#drop', 'drop', {'dataTransfer': transfer})


def shown(page) -> np.ndarray:
    """The result canvas's pixels (RGB uint8)."""
    url = page.evaluate("document.querySelector('#result').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(',')[1]))).convert('RGB'))


def python_onnxruntime(site: Path, colorizer: Path, photo: np.ndarray, temperature: float) -> np.ndarray:
    """The page's graphs in onnxruntime (CPU) in Python, with ``colorizer`` as the colorize graph, rounded to
    8 bits as the canvas rounds."""
    def run(name, **inputs):
        path = colorizer if name == 'colorize' else site / f'{name}.onnx'
        session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
        return session.run(None, inputs)[0]
    rgb = (photo.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    ab = run('colorize', rgb=run('prepare', photo=rgb), temperature=np.array(temperature, np.float32))
    out = run('recombine', photo=rgb, ab=ab)[0].transpose(1, 2, 0)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def ab_of(rgb: np.ndarray) -> np.ndarray:
    lab = splitbrain_hub.ops.rgb_to_lab(torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255)
    return lab[1:].numpy()


@pytest.fixture(scope='module')
def fp32(shipped_onnx):
    """The colorizer in float32, the reference for the page's float16 one."""
    return shipped_onnx['colorize']


def test_page_colorizer_is_float16(site):
    import onnx
    graph = onnx.load(str(site / 'colorize.onnx')).graph
    assert {tensor.data_type for tensor in graph.initializer if len(tensor.dims) == 4} == {onnx.TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.FLOAT] * 2


def test_page_colorizes_a_dropped_photo_in_headless_chromium(site, static_server, fp32, tmp_path):
    sync_playwright = pytest.importorskip('playwright.sync_api').sync_playwright
    astronaut = skimage_data.astronaut()
    upload = tmp_path / 'astronaut.png'
    Image.fromarray(astronaut).save(upload)
    requests = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on('request', lambda request: requests.append(request.url))
            page.goto(static_server + '/')
            page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
            drop(page, upload)
            page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)", timeout=60_000)
            status = page.text_content('#status')
            assert page.evaluate('document.body.dataset.state') == 'done', status
            result = shown(page)
            assert page.get_attribute('#download', 'aria-disabled') == 'false'
        finally:
            browser.close()
    assert all(url.startswith(static_server) for url in requests), requests  # nothing from elsewhere
    assert result.shape == astronaut.shape
    ab = ab_of(result)
    assert np.hypot(*ab).mean() > 5  # a colour photo, not grey
    expected = python_onnxruntime(Path(site), fp32, astronaut, splitbrain_hub.inference.DEFAULT_TEMPERATURE)
    levels = np.abs(result.astype(int) - expected.astype(int)).max()
    ab_diff = np.abs(ab - ab_of(expected))
    print(f'browser vs Python onnxruntime: RGB max |diff| {levels} levels, ab max |diff| {ab_diff.max():.3f}, '
          f'mean {ab_diff.mean():.4f}; mean chroma {np.hypot(*ab).mean():.2f}')
    assert levels <= RGB_LEVELS
    assert ab_diff.mean() <= AB_MEAN_TOLERANCE
