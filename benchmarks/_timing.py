"""Shared by the benchmark scripts: time candidates in interleaved rounds, so a busy machine slows all alike."""
import statistics
import time
from collections.abc import Callable


def measure(candidates: dict[str, Callable[[], object]], rounds: int = 7, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each candidate; rounds alternate between candidates."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def machine() -> str:
    import os
    import platform

    import torch
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} '
            f'({torch.get_num_threads()} threads), load average {load:.1f}')


def add_threads_argument(parser) -> None:
    """``--threads N``: torch's intra-op threads for this process (on a shared, busy machine a second
    thread can wait on a descheduled one, so 1 thread is the fair match for single-threaded numpy)."""
    parser.add_argument('--threads', type=int, help="torch.set_num_threads for this run (default: torch's)")


def apply_threads(args) -> None:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
