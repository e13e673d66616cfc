"""Load test of ``splitbrain-hub serve`` on loopback against ``splitbrain_hub.colorize`` in a plain loop.

Prints figures, asserts nothing. For 1, 4, 16 and 64 concurrent clients, each posting the same 512x512
photo (JPEG) to ``/v1/colorize`` and reading the PNG back, it reports requests/s, p50 / p99 latency and
the answers' status codes; the baseline is the same photo through ``splitbrain_hub.colorize(pil_image)``
called in a loop in this process, timed right before and after each level (the faster figure counts),
and the same loop with the JPEG decode and PNG encode the service does on top. Goals (issue 8): at 16
clients >= 1.5x the loop's images/s, p99 <= 3x p50; at 64 clients every request succeeds or gets a clean 503.

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
from splitbrain_hub.hub import DEFAULT_ARCHITECTURE, shipped_weights_path
from splitbrain_hub.inference import load_model

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
    shipped = shipped_weights_path(DEFAULT_ARCHITECTURE, 'tinyimagenet_128')
    if shipped.is_file():
        return str(shipped)
    import timm
    splitbrain_hub.save_pretrained(timm.create_model(DEFAULT_ARCHITECTURE), tmp / 'random')
    return str(tmp / 'random')


def rate(step, seconds: float) -> float:
    """Calls per second of ``step`` over ``seconds`` (at least 3 calls)."""
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        step()
        count += 1
    return count / (time.perf_counter() - start)


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
    parser.add_argument('--loop-seconds', type=float, default=2, help='how long to time the plain loop each time')
    args = parser.parse_args()

    image = photo_512()
    buffer = io.BytesIO()
    image.save(buffer, 'JPEG', quality=90)
    jpeg = buffer.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        weights = weights_path(args.weights, Path(tmp))
        print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; weights {weights}')
        model = load_model(weights, 'cpu')

        def loop_step():
            splitbrain_hub.colorize(image, model=model)

        def loop_step_with_codecs():  # the decode and encode the service does on top
            result = splitbrain_hub.colorize(Image.open(io.BytesIO(jpeg)).convert('RGB'), model=model)
            result.save(io.BytesIO(), 'PNG', compress_level=1)
        for _ in range(10):  # warm-up: the first calls after loading are several times slower
            loop_step()

        def loop_rate(step) -> float:
            # On the main thread and on a worker thread (where the service runs the model), the faster:
            # on a shared machine the two have been seen to differ, and this keeps the ratio conservative.
            with concurrent.futures.ThreadPoolExecutor(1) as worker:
                return max(rate(step, args.loop_seconds), worker.submit(rate, step, args.loop_seconds).result())

        def loop_rates():
            return loop_rate(loop_step), loop_rate(loop_step_with_codecs)
        process, url = start_server(weights, Path(tmp) / 'server.log')
        rows = []
        try:
            load(url, jpeg, 2, 4, 30)  # warm-up
            for clients in CLIENTS:
                # The machine may be shared: the plain loop is timed right before and right after each
                # level, and the faster of the two is the baseline, which keeps the ratio conservative.
                loop_before = loop_rates()
                latencies, statuses, batches, wall = load(url, jpeg, clients, max(args.requests, 2 * clients),
                                                          args.max_seconds)
                baseline = [max(pair) for pair in zip(loop_before, loop_rates())]
                rows.append((clients, len(latencies) / wall, baseline, latencies, batches, statuses))
                print(f'  {clients} clients: {rows[-1][1]:.2f} req/s; plain loop {baseline[0]:.2f} img/s, '
                      f'with codecs {baseline[1]:.2f} img/s')
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    print(f"\n{'clients':>7} {'req/s':>7} {'loop/s':>7} {'x loop':>7} {'+codecs':>7} {'x':>6} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'p99/p50':>7} {'batch':>6} {'200':>5} {'503':>5} {'other':>5}")
    for clients, service_rate, (loop_rate, codecs_rate), latencies, batches, statuses in rows:
        p50 = statistics.median(latencies) * 1000 if latencies else float('nan')
        p99 = float(np.percentile(latencies, 99)) * 1000 if latencies else float('nan')
        other = len(statuses) - statuses.count(200) - statuses.count(503)
        print(f'{clients:>7} {service_rate:>7.2f} {loop_rate:>7.2f} {service_rate / loop_rate:>7.2f} '
              f'{codecs_rate:>7.2f} {service_rate / codecs_rate:>6.2f} {p50:>8.0f} '
              f'{p99:>8.0f} {p99 / p50:>7.2f} {statistics.fmean(batches) if batches else 0:>6.1f} '
              f'{statuses.count(200):>5} {statuses.count(503):>5} {other:>5}')
    print('loop/s: colorize(PIL) in a plain loop; +codecs: the loop with the JPEG decode and PNG encode the '
          'service does too; batch: mean X-Batch-Size (images per forward pass) of the successful requests')


if __name__ == '__main__':
    main()
