"""Load test of ``splitbrain-hub serve`` on loopback against ``splitbrain_hub.colorize`` in a plain loop.

Prints figures, asserts nothing. For 1, 4, 16 and 64 concurrent clients, each posting the same 512x512
photo (JPEG) to ``/v1/colorize`` and reading the PNG back, it reports requests/s, p50 / p99 latency and
the answers' status codes; the baseline is the same photo through ``splitbrain_hub.colorize(pil_image)``
called in a loop in this process, timed in the same run (also shown with the JPEG decode and PNG encode
the service does on top). Goals (issue 8): at 16 clients >= 1.5x the loop's images/s, p99 <= 3x p50; at
64 clients every request succeeds or gets a clean 503.

    python benchmarks/bench_serve.py [--weights PATH] [--requests 48] [--max-seconds 30]

Without ``--weights`` it uses the shipped weights if present, else a random-init checkpoint in a temp
folder (speed does not depend on the weight values). Loopback only (127.0.0.1).
"""
import argparse
import concurrent.futures
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

import splitbrain_hub
from splitbrain_hub.inference import DEFAULT_MODEL, load_model
from splitbrain_hub.weights import shipped_weights_path

CLIENTS = (1, 4, 16, 64)


def photo_512() -> Image.Image:
    try:
        from skimage import data
        return Image.fromarray(data.astronaut())  # 512x512 RGB
    except ImportError:
        y, x = np.mgrid[0:512, 0:512] / 512
        return Image.fromarray((np.stack([x, y, 1 - x * y], -1) * 255).astype(np.uint8))


def weights_path(given, tmp: Path) -> str:
    if given:
        return given
    shipped = shipped_weights_path(DEFAULT_MODEL, 'tinyimagenet_128')
    if shipped.is_file():
        return str(shipped)
    import timm
    splitbrain_hub.save_pretrained(timm.create_model(DEFAULT_MODEL), tmp / 'random')
    return str(tmp / 'random')


def plain_loop(image: Image.Image, jpeg: bytes, weights: str, seconds: float):
    """images/s of colorize in a loop; and of decode JPEG + colorize + encode PNG (the service's work)."""
    model = load_model(weights, 'cpu')
    splitbrain_hub.colorize(image, model=model)  # warm-up

    def rate(step) -> float:
        count, start = 0, time.perf_counter()
        while count < 3 or time.perf_counter() - start < seconds:
            step()
            count += 1
        return count / (time.perf_counter() - start)

    def with_codecs():
        result = splitbrain_hub.colorize(Image.open(io.BytesIO(jpeg)).convert('RGB'), model=model)
        result.save(io.BytesIO(), 'PNG', compress_level=1)
    return rate(lambda: splitbrain_hub.colorize(image, model=model)), rate(with_codecs)


def start_server(weights: str, log: Path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    command = [sys.executable, '-m', 'splitbrain_hub.serve', '--host', '127.0.0.1', '--port', str(port),
               '--weights', weights, '--device', 'cpu']
    process = subprocess.Popen(command, stdout=log.open('wb'), stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f'server exited:\n{log.read_text()}')
        try:
            if httpx.get(url + '/readyz').status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f'server not ready in 120 s:\n{log.read_text()}')


def load(url: str, jpeg: bytes, clients: int, requests: int, max_seconds: float):
    """``clients`` threads post until ``requests`` were sent or ``max_seconds`` passed: latencies, codes, wall."""
    latencies, statuses, batch_sizes = [], [], []
    sent, deadline = iter(range(requests)), time.monotonic() + max_seconds

    def client():
        with httpx.Client(base_url=url, timeout=120) as session:
            while next(sent, None) is not None and time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    response = session.post('/v1/colorize', files={'image': ('photo.jpg', jpeg, 'image/jpeg')})
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - start)
                        batch_sizes.append(int(response.headers['x-batch-size']))
                    elif response.status_code != 503 or 'retry-after' not in response.headers:
                        print(f'  unexpected answer {response.status_code}: {response.text[:200]}')
                except httpx.HTTPError as e:
                    statuses.append(type(e).__name__)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return latencies, statuses, batch_sizes, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', help='save_pretrained folder or .safetensors (default: shipped, else random init)')
    parser.add_argument('--requests', type=int, default=48, help='requests per level, at least 2 per client')
    parser.add_argument('--max-seconds', type=float, default=30, help='stop sending new requests after this')
    parser.add_argument('--loop-seconds', type=float, default=8, help='how long to time the plain loop')
    args = parser.parse_args()

    image = photo_512()
    buffer = io.BytesIO()
    image.save(buffer, 'JPEG', quality=90)
    jpeg = buffer.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        weights = weights_path(args.weights, Path(tmp))
        print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; weights {weights}')
        # The loop is timed before and after the load test, and the faster figure is the baseline: the
        # machine may be shared, and this keeps the ratios conservative.
        loop_rates = [plain_loop(image, jpeg, weights, args.loop_seconds)]
        process, url = start_server(weights, Path(tmp) / 'server.log')
        try:
            load(url, jpeg, 2, 4, 30)  # warm-up
            rows = []
            for clients in CLIENTS:
                latencies, statuses, batches, wall = load(url, jpeg, clients, max(args.requests, 2 * clients),
                                                          args.max_seconds)
                ok = len(latencies)
                p50 = statistics.median(latencies) * 1000 if ok else float('nan')
                p99 = float(np.percentile(latencies, 99)) * 1000 if ok else float('nan')
                rate = ok / wall
                print(f'  {clients} clients: {rate:.2f} req/s')
                rows.append((clients, rate, p50, p99, batches, statuses))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        loop_rates.append(plain_loop(image, jpeg, weights, args.loop_seconds))
    for when, (rate, codecs_rate) in zip(('before', 'after'), loop_rates):
        print(f'plain loop ({when}): colorize(PIL 512x512) {rate:.2f} img/s; '
              f'with JPEG decode + PNG encode {codecs_rate:.2f} img/s')
    loop_rate = max(rate for rate, _ in loop_rates)
    print(f"\n{'clients':>7} {'req/s':>7} {'x loop':>7} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>7} "
          f"{'mean batch':>10} {'200':>5} {'503':>5} {'other':>5}")
    for clients, rate, p50, p99, batches, statuses in rows:
        print(f'{clients:>7} {rate:>7.2f} {rate / loop_rate:>7.2f} {p50:>8.0f} {p99:>8.0f} {p99 / p50:>7.2f} '
              f'{statistics.fmean(batches) if batches else 0:>10.1f} {statuses.count(200):>5} '
              f'{statuses.count(503):>5} {len(statuses) - statuses.count(200) - statuses.count(503):>5}')


if __name__ == '__main__':
    main()
