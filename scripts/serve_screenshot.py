"""Take the README's screenshot of the web page: a real server, headless Chromium, the package's photo.

    python scripts/serve_screenshot.py [--weights PATH] [--out docs/serve.png]

Needs the ``serve`` extra, ``playwright`` (the Python package) and Debian's ``/usr/bin/chromium``.
"""
import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from splitbrain_hub.images import SAMPLE_PHOTO

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_ready(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + '/readyz', timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f'{url}: not ready after {seconds} s')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', help='save_pretrained folder or .safetensors (default: the shipped weights)')
    parser.add_argument('--out', type=Path, default=Path('docs/serve.png'))
    args = parser.parse_args()
    port = _free_port()
    command = [sys.executable, '-m', 'splitbrain_hub.cli', 'serve', '--host', '127.0.0.1', '--port', str(port)]
    server = subprocess.Popen(command + (['--weights', args.weights] if args.weights else []))
    try:
        url = f'http://127.0.0.1:{port}'
        _wait_ready(url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={'width': 1280, 'height': 720})
            page.goto(url + '/')
            page.set_input_files('#file', str(SAMPLE_PHOTO))
            page.wait_for_function("document.querySelector('#result').naturalWidth > 0", timeout=60_000)
            shot = args.out.with_suffix('.tmp.png')
            page.screenshot(path=str(shot))
            browser.close()
        # 256 colours keep the PNG small; the page is flat colour and photos at thumbnail size.
        Image.open(shot).convert('RGB').quantize(256).save(args.out, optimize=True)
        shot.unlink()
        print(f'wrote {args.out} ({args.out.stat().st_size} bytes)')
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == '__main__':
    main()
