"""Soak test of ``splitbrain-hub serve``: minutes of mixed traffic on loopback, then a SIGTERM drain.

    python -m scripts.soak                          # 12 minutes, 8 clients, 2 server processes, shipped weights
    python -m scripts.soak --minutes 1 --out /tmp/soak.json --plot /tmp/soak.png   # a quick look

It starts the service as a user would (``python -m splitbrain_hub.serve``, 127.0.0.1, a free port, its own
empty TMPDIR) and runs ``--clients`` asyncio clients until ``--minutes`` have passed or ``--max-requests``
were sent. Each client draws its next request from ``SCENARIOS`` (seeded): good photos of several sizes to
the three endpoints, bad uploads (not an image, truncated JPEG, a decompression bomb, an empty file, a missing
field, a bad parameter) and clients that announce a body and hang up half-way through it. Every 2 s it
samples the server's RSS, thread count and CPU time from /proc (Linux; all its processes together).

Pass (each checked and written down, the script exits 1 if one fails):
  * every answer is one its scenario allows (200 for good photos, the documented 4xx for bad uploads, 503 with
    Retry-After for any): so no other 5xx, and no connection error on a complete request;
  * RSS grows by < 10 % after the warm-up (median of the last minute vs median of the minute after warm-up);
  * no temp files in the server's TMPDIR, ``--rest-s`` (15 s) after the traffic and after exit; threads do not grow: the
    largest count in the last minute, and the count at rest, exceed the largest in the minute after the
    warm-up by at most one per server process (pools grow on demand and keep idle threads);
  * SIGTERM, sent while a final burst of large photos is in flight, drains: each is answered 200 (or 503
    with Retry-After if it arrived after the signal), and the server shuts down within the drain timeout.

Writes ``results/soak.json`` (atomically) and ``docs/soak.png`` (RSS and p99 latency over time).
"""
import argparse
import asyncio
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from splitbrain_hub.files import atomic_write

REPO = Path(__file__).resolve().parents[1]

PHOTO = REPO / 'splitbrain_hub' / 'assets' / 'coffee.jpg'
SAMPLE_EVERY_S = 2.0
WINDOW_S = 30.0
RSS_GROWTH_LIMIT = 0.10


@dataclass(frozen=True)
class Scenario:
    name: str
    weight: float     # relative frequency
    path: str         # endpoint
    expect: tuple[int, ...]  # acceptable status codes (503 with Retry-After is always acceptable)


SCENARIOS = (
    Scenario('colorize_640', 30, '/v1/colorize', (200,)),
    Scenario('colorize_1024', 10, '/v1/colorize', (200,)),
    Scenario('colorize_png_300', 10, '/v1/colorize', (200,)),
    Scenario('lightness_640', 8, '/v1/lightness', (200,)),
    Scenario('features_640', 8, '/v1/features', (200,)),
    Scenario('not_an_image', 5, '/v1/colorize', (400, 415, 422)),
    Scenario('truncated_jpeg', 5, '/v1/colorize', (400, 415, 422)),
    Scenario('bomb', 4, '/v1/colorize', (400, 413, 422)),
    Scenario('empty_file', 4, '/v1/colorize', (400, 415, 422)),
    Scenario('missing_field', 3, '/v1/colorize', (400, 422)),
    Scenario('bad_temperature', 3, '/v1/colorize', (400, 422)),
    Scenario('disconnect_mid_upload', 10, '/v1/colorize', ()),
)
BURST = Scenario('drain_burst', 0, '/v1/colorize', (200,))  # the in-flight requests of the final SIGTERM


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=90) if fmt == 'JPEG' else image.save(buffer, fmt)
    return buffer.getvalue()


def payloads() -> dict[str, bytes]:
    """The bodies of each scenario's upload, made once."""
    photo = Image.open(PHOTO).convert('RGB')
    jpeg_640 = encoded(photo.resize((640, 427)), 'JPEG')
    bomb = Image.new('L', (20000, 20000))  # 400 Mpx of one colour: a few hundred kB as PNG
    return {
        'colorize_640': jpeg_640,
        'colorize_1024': encoded(photo.resize((1024, 683)), 'JPEG'),
        'colorize_png_300': encoded(photo.resize((300, 200)).convert('L'), 'PNG'),
        'lightness_640': jpeg_640,
        'features_640': jpeg_640,
        'not_an_image': b'%PDF-1.4 this is not an image ' * 100,
        'truncated_jpeg': jpeg_640[: len(jpeg_640) // 3],
        'bomb': encoded(bomb, 'PNG'),
        'empty_file': b'',
        'missing_field': jpeg_640,
        'bad_temperature': jpeg_640,
        'disconnect_mid_upload': jpeg_640,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's worker processes with ``--workers`` > 1)."""
    pids, index = [pid], 0
    while index < len(pids):
        for task in Path(f'/proc/{pids[index]}/task').glob('*'):
            try:
                pids += [int(child) for child in (task / 'children').read_text().split()]
            except FileNotFoundError:
                pass
        index += 1
    return pids


def proc_sample(pid: int) -> tuple[float, int, float] | None:
    """RSS in MiB, thread count and CPU seconds (user + system) of ``pid`` and its descendants together,
    or None once ``pid`` is gone."""
    rss_mib, threads, cpu_s = 0.0, 0, 0.0
    for member in process_tree(pid):
        try:
            status = Path(f'/proc/{member}/status').read_text()
            stat = Path(f'/proc/{member}/stat').read_text().rsplit(')', 1)[1].split()
        except FileNotFoundError:
            if member == pid:
                return None
            continue  # a worker that exited between the listing and the read
        fields = dict(line.split(':', 1) for line in status.splitlines() if ':' in line)
        rss_mib += int(fields['VmRSS'].split()[0]) / 1024
        threads += int(fields['Threads'])
        cpu_s += (int(stat[11]) + int(stat[12])) / os.sysconf('SC_CLK_TCK')
    return rss_mib, threads, cpu_s


async def disconnect_mid_upload(port: int, body: bytes) -> str:
    """Announce a multipart upload, send half of it, hang up. The server must shrug it off."""
    boundary = 'soakboundary'
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            'Content-Type: image/jpeg\r\n\r\n').encode()
    length = len(head) + len(body) + len(f'\r\n--{boundary}--\r\n')
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    writer.write((f'POST /v1/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n'
                  f'Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n').encode() + head
                 + body[: len(body) // 2])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await writer.wait_closed()
    return 'disconnected'


async def one_request(client: httpx.AsyncClient, port: int, scenario: Scenario, body: bytes) -> object:
    """The status code of one request of ``scenario`` (or what went wrong on the client side)."""
    if scenario.name == 'disconnect_mid_upload':
        return await disconnect_mid_upload(port, body)
    field = 'file' if scenario.name == 'missing_field' else 'image'
    name = 'photo.png' if scenario.name in ('colorize_png_300', 'bomb') else 'photo.jpg'
    data = {'temperature': 'hot'} if scenario.name == 'bad_temperature' else {}
    response = await client.post(scenario.path, files={field: (name, body)}, data=data)
    await response.aread()
    if response.status_code == 503 and 'retry-after' not in response.headers:
        return '503_without_retry_after'
    return response.status_code


async def run_clients(port: int, args: argparse.Namespace, bodies: dict[str, bytes], start: float) -> list[dict]:
    rng = random.Random(args.seed)
    weights = [s.weight for s in SCENARIOS]
    records: list[dict] = []
    deadline = start + args.minutes * 60

    async def client() -> None:
        async with httpx.AsyncClient(base_url=f'http://127.0.0.1:{port}', timeout=120) as session:
            while time.monotonic() < deadline and len(records) < args.max_requests:
                scenario = rng.choices(SCENARIOS, weights)[0]
                sent = time.monotonic()
                try:
                    outcome = await one_request(session, port, scenario, bodies[scenario.name])
                except httpx.HTTPError as e:
                    outcome = type(e).__name__
                records.append(dict(t=round(sent - start, 3), scenario=scenario.name, status=outcome,
                                    latency_s=round(time.monotonic() - sent, 4)))
    await asyncio.gather(*(client() for _ in range(args.clients)))
    return records


async def sample_server(pid: int, start: float, stop: asyncio.Event, samples: list[dict]) -> None:
    while not stop.is_set():
        sample = proc_sample(pid)
        if sample is not None:
            rss, threads, cpu = sample
            samples.append(dict(t=round(time.monotonic() - start, 2), rss_mib=round(rss, 1), threads=threads,
                                cpu_s=round(cpu, 2)))
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
        except asyncio.TimeoutError:
            pass


async def drain_burst(port: int, body: bytes, clients: int, process: subprocess.Popen) -> list[dict]:
    """``clients`` large photos at once, and SIGTERM while they are in flight: each must still be answered
    (200), or refused cleanly (503 with Retry-After) if it reached the server after the signal."""
    async def post(session: httpx.AsyncClient) -> dict:
        sent = time.monotonic()
        try:
            status = await one_request(session, port, BURST, body)
        except httpx.HTTPError as e:
            status = type(e).__name__
        return dict(t=None, scenario=BURST.name, status=status, latency_s=round(time.monotonic() - sent, 4))
    async with httpx.AsyncClient(base_url=f'http://127.0.0.1:{port}', timeout=120) as session:
        posts = [asyncio.create_task(post(session)) for _ in range(clients)]
        await asyncio.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        return list(await asyncio.gather(*posts))


async def soak(process: subprocess.Popen, port: int, tmpdir: Path,
               args: argparse.Namespace) -> tuple[list[dict], list[dict], dict, float]:
    """The traffic, the server samples, the server at rest afterwards, and when SIGTERM was sent."""
    bodies = payloads()  # before the clock starts: the bomb alone takes seconds to encode
    start, stop, samples = time.monotonic(), asyncio.Event(), []
    sampler = asyncio.create_task(sample_server(process.pid, start, stop, samples))
    records = await run_clients(port, args, bodies, start)
    await asyncio.sleep(args.rest_s)
    rss_mib, threads, _ = proc_sample(process.pid)
    at_rest = dict(rss_mib=round(rss_mib, 1), threads=threads, temp_files=sorted(p.name for p in tmpdir.rglob('*')))
    stop.set()
    await sampler
    sigterm_at = time.monotonic()
    records += await drain_burst(port, bodies['colorize_1024'], args.clients, process)
    return records, samples, at_rest, sigterm_at


def start_server(args: argparse.Namespace, port: int, tmpdir: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, '-m', 'splitbrain_hub.serve', '--host', '127.0.0.1', '--port', str(port),
               '--device', 'cpu', '--drain-timeout-s', str(args.drain_timeout_s), '--workers', str(args.workers)]
    if args.weights:
        command += ['--weights', args.weights]
    process = subprocess.Popen(command, stdout=log.open('wb'), stderr=subprocess.STDOUT, cwd=REPO,
                               env={**os.environ, 'TMPDIR': str(tmpdir), 'HF_HUB_OFFLINE': '1'})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f'server exited:\n{log.read_text()}')
        try:
            if httpx.get(f'http://127.0.0.1:{port}/readyz').status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f'server not ready in 120 s:\n{log.read_text()}')


def drain(process: subprocess.Popen, sigterm_at: float, timeout_s: float, log: Path) -> dict:
    """How the process ended after SIGTERM, how long the drain took and what the server logged about it.

    uvicorn re-raises the SIGTERM it caught once its shutdown is complete, so a clean drain ends in -15
    (the shell's 143), as any process stopped by SIGTERM; 0 is accepted too.
    """
    try:
        code = process.wait(max(1.0, sigterm_at + timeout_s + 10 - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        code = 'killed: no exit within the drain timeout'
    lines = log.read_text(errors='replace').splitlines()
    tail = [line for line in lines if 'SIGTERM' in line or 'drained' in line or 'shutdown' in line.lower()]
    return dict(exit_code=code, seconds=round(time.monotonic() - sigterm_at, 2), log=tail[-6:],
                clean=code in (0, -signal.SIGTERM) and any('drained (0 requests' in line for line in tail)
                and any('Application shutdown complete' in line for line in tail))


def windows(records: list[dict], duration_s: float) -> list[dict]:
    """p50 / p99 latency of the successful requests and request counts per ``WINDOW_S`` window."""
    rows = []
    for begin in np.arange(0, duration_s, WINDOW_S):
        inside = [r for r in records if r['t'] is not None and begin <= r['t'] < begin + WINDOW_S]
        ok = [r['latency_s'] for r in inside if r['status'] == 200]
        rows.append(dict(t=float(begin), requests=len(inside), ok=len(ok),
                         p50_s=round(float(np.percentile(ok, 50)), 3) if ok else None,
                         p99_s=round(float(np.percentile(ok, 99)), 3) if ok else None))
    return rows


def verdict(records: list[dict], samples: list[dict], at_rest: dict, leftovers: list[str], drained: dict,
            args: argparse.Namespace) -> dict:
    """Each pass criterion: its measured value and whether it holds."""
    bad = [r for r in records if r['status'] not in expected_statuses(r['scenario'])]
    # RSS and threads swing with the batches in flight: compare the minute after the warm-up with the last.
    warmup_s = args.warmup_s
    first = [s for s in samples if warmup_s <= s['t'] < warmup_s + 60] or samples[-1:]
    last = [s for s in samples if s['t'] >= samples[-1]['t'] - 60]
    rss_first, rss_last = (statistics.median(s['rss_mib'] for s in window) for window in (first, last))
    rss_growth = rss_last / rss_first - 1
    threads_first, threads_last = (max(s['threads'] for s in window) for window in (first, last))
    return dict(
        unexpected_answers=dict(value=len(bad), examples=bad[:10], ok=not bad),
        rss_growth_after_warmup=dict(value=round(rss_growth, 4), limit=RSS_GROWTH_LIMIT,
                                     median_first_minute_after_warmup_mib=round(rss_first, 1),
                                     median_last_minute_mib=round(rss_last, 1),
                                     max_after_warmup_mib=max(s['rss_mib'] for s in samples if s['t'] >= warmup_s),
                                     ok=rss_growth < RSS_GROWTH_LIMIT),
        # Thread pools (anyio's, the batcher's) grow on demand and keep idle threads: one more thread per
        # server process over the run is a pool reaching a rarer peak; a leak would add one per request.
        threads=dict(max_first_minute_after_warmup=threads_first, max_last_minute=threads_last,
                     at_rest=at_rest['threads'], tolerance=args.workers,
                     ok=max(threads_last, at_rest['threads']) <= threads_first + args.workers),
        temp_files_left=dict(at_rest=at_rest['temp_files'], after_exit=leftovers,
                             ok=not at_rest['temp_files'] and not leftovers),
        drain=dict(**drained, timeout_s=args.drain_timeout_s,
                   ok=drained['clean'] and drained['seconds'] <= args.drain_timeout_s + 5),
    )


def expected_statuses(name: str) -> tuple[object, ...]:
    scenario = next(s for s in (*SCENARIOS, BURST) if s.name == name)
    return (*scenario.expect, 503, 'disconnected') if scenario.expect else ('disconnected',)


def summary(records: list[dict], samples: list[dict], duration_s: float) -> dict:
    ok = [r['latency_s'] for r in records if r['status'] == 200 and r['t'] is not None]  # the burst aside
    counts: dict[str, dict[str, int]] = {}
    for r in records:
        per = counts.setdefault(r['scenario'], {})
        per[str(r['status'])] = per.get(str(r['status']), 0) + 1
    # Before SIGTERM only: the workers' CPU time leaves the sum when they exit.
    running = [s for s in samples if s['t'] < duration_s] or samples
    cpu_cores = (running[-1]['cpu_s'] - running[0]['cpu_s']) / max(running[-1]['t'] - running[0]['t'], 1e-9)
    return dict(requests=len(records), requests_per_s=round(len(records) / duration_s, 2), ok=len(ok),
                p50_s=round(statistics.median(ok), 3) if ok else None,
                p99_s=round(float(np.percentile(ok, 99)), 3) if ok else None,
                server_cpu_cores_mean=round(cpu_cores, 2), statuses_by_scenario=counts)


def plot(samples: list[dict], rows: list[dict], warmup_s: float, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (rss_axis, latency_axis) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    rss_axis.plot([s['t'] / 60 for s in samples], [s['rss_mib'] for s in samples])
    rss_axis.set_ylabel('server RSS (MiB)')
    with_ok = [r for r in rows if r['p99_s'] is not None]
    latency_axis.plot([r['t'] / 60 for r in with_ok], [r['p99_s'] for r in with_ok], marker='o', label='p99')
    latency_axis.plot([r['t'] / 60 for r in with_ok], [r['p50_s'] for r in with_ok], marker='.', label='p50')
    latency_axis.set_ylabel(f'latency of 200s per {WINDOW_S:.0f} s (s)')
    latency_axis.set_xlabel('minutes')
    latency_axis.legend()
    for axis in (rss_axis, latency_axis):
        axis.axvline(warmup_s / 60, color='grey', linestyle=':')
        axis.grid(alpha=0.3)
    rss_axis.set_title('splitbrain-hub serve under a soak (dotted: end of warm-up)')
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=110))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=float, default=12.0)
    parser.add_argument('--warmup-s', type=float, default=120.0, help='RSS growth is measured after this')
    parser.add_argument('--clients', type=int, default=8, help='concurrent clients')
    parser.add_argument('--workers', type=int, default=2,
                        help='server processes (one saturates at under one core: its model runs on one thread)')
    parser.add_argument('--max-requests', type=int, default=100_000, help='a bound on the loop besides time')
    parser.add_argument('--drain-timeout-s', type=float, default=30.0)
    parser.add_argument('--rest-s', type=float, default=15.0, help='pause after the traffic before the at-rest sample')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--weights', help='save_pretrained folder or .safetensors (default: the shipped weights)')
    parser.add_argument('--note', default='', help='what else ran on the machine meanwhile')
    parser.add_argument('--out', type=Path, default=REPO / 'results' / 'soak.json')
    parser.add_argument('--plot', type=Path, default=REPO / 'docs' / 'soak.png')
    args = parser.parse_args(argv)

    port = free_port()
    with tempfile.TemporaryDirectory(prefix='soak-') as scratch:
        tmpdir = Path(scratch) / 'server-tmp'
        tmpdir.mkdir()
        process = start_server(args, port, tmpdir, Path(scratch) / 'server.log')
        client_cpu_start = time.process_time()
        records, samples, at_rest, sigterm_at = asyncio.run(soak(process, port, tmpdir, args))
        client_cpu_s = time.process_time() - client_cpu_start
        drained = drain(process, sigterm_at, args.drain_timeout_s, Path(scratch) / 'server.log')
        leftovers = sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob('*'))
    duration_s = args.minutes * 60
    rows = windows(records, duration_s)
    checks = verdict(records, samples, at_rest, leftovers, drained, args)
    report = dict(config=dict(minutes=args.minutes, warmup_s=args.warmup_s, clients=args.clients, workers=args.workers,
                              max_requests=args.max_requests, seed=args.seed, weights=args.weights or 'shipped',
                              scenarios=[s.__dict__ for s in SCENARIOS], cpu_count=os.cpu_count(), note=args.note),
                  summary=dict(**summary(records, samples, duration_s),
                               client_cpu_cores_mean=round(client_cpu_s / duration_s, 2)), checks=checks,
                  passed=all(c['ok'] for c in checks.values()), windows=rows, server_samples=samples)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1) + '\n'))
    plot(samples, rows, args.warmup_s, args.plot)
    print(json.dumps(dict(summary=report['summary'], checks=checks, passed=report['passed']), indent=1))
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
