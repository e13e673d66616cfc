"""distributed.py and the CLI under torchrun: 2 CPU processes (gloo) write exactly what one process writes,
a failure on one rank sets the job's exit status, a killed rank loses only unfinished files.

A randomly initialised checkpoint at the network's smallest input size stands in for the release. The
one-process reference runs with one thread, as each torchrun process does (torchrun sets
OMP_NUM_THREADS=1): fp32 reductions split over several threads can round differently in the last bit.
"""
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tar_shards import write_shard

from splitbrain_hub import cli
from splitbrain_hub.batch.distributed import Rank, from_environment, local_device, share
from splitbrain_hub.errors import InputError

# --- units ----------------------------------------------------------------------------------------


def test_rank_comes_from_torchruns_variables():
    assert from_environment({}) == Rank(0, 1, 0, 1)
    env = {'RANK': '3', 'WORLD_SIZE': '4', 'LOCAL_RANK': '1', 'LOCAL_WORLD_SIZE': '2'}
    assert from_environment(env) == Rank(3, 4, 1, 2)
    with pytest.raises(InputError, match=r"RANK: expected an integer \(set by torchrun\), got 'x'"):
        from_environment({**env, 'RANK': 'x'})
    with pytest.raises(InputError, match='expected 0 <= RANK < WORLD_SIZE .* got RANK=4, WORLD_SIZE=4'):
        from_environment({**env, 'RANK': '4'})


@pytest.mark.parametrize('world_size', [1, 2, 3, 5])
def test_shares_are_disjoint_complete_and_fixed(world_size):
    parts = list(range(11))
    shares = [share(parts, Rank(r, world_size)) for r in range(world_size)]
    assert sorted(p for s in shares for p in s) == parts
    assert shares == [share(parts, Rank(r, world_size)) for r in range(world_size)]
    assert shares[0][:2] == [0, world_size][:len(shares[0])]  # round robin


def test_each_rank_gets_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert local_device(torch.device('cuda'), Rank(1, 2, 1, 2)) == torch.device('cuda', 1)
    assert local_device(torch.device('cuda', 0), Rank(1, 2, 1, 2)) == torch.device('cuda', 0)  # asked for
    assert local_device(torch.device('cpu'), Rank(1, 2, 1, 2)) == torch.device('cpu')
    with pytest.raises(InputError, match='LOCAL_RANK 2: expected a GPU per process on this machine, got 2 GPUs'):
        local_device(torch.device('cuda'), Rank(2, 3, 2, 3))


# --- end to end under torchrun --------------------------------------------------------------------


def _png(size, seed, mode='RGB'):
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8), 'RGBA').convert(mode).save(buffer, 'PNG')
    return buffer.getvalue()




@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Six photos and a broken one in a folder; two shards of three photos (and labels)."""
    root = tmp_path_factory.mktemp('data')
    (root / 'in').mkdir()
    for i in range(6):
        (root / 'in' / f'a{i}.png').write_bytes(_png((40 + 4 * i, 30), i, 'RGBA' if i == 2 else 'RGB'))
    (root / 'in' / 'zz_bad.jpg').write_text('not a photo')  # batch 3 with --batch-size 2: rank 1's
    for s in range(2):
        write_shard(root / f'train-{s:06d}.tar', {name: data for i in range(3) for name, data in (
            (f'k{s}{i}.png', _png((36, 28 + 2 * i), 10 * s + i)), (f'k{s}{i}.cls', b'%d' % i))})
    return root


def _torchrun(*argv, **popen):
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '--tee=3',
               '-m', 'splitbrain_hub.cli', *map(str, argv)]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    if popen:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _one_process(*argv):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each torchrun process
    try:
        return cli.main([str(a) for a in argv])
    finally:
        torch.set_num_threads(threads)


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def test_two_ranks_write_what_one_process_writes_and_a_failure_on_one_sets_the_status(data, weights, tmp_path,
                                                                                       capsys):
    """colorize at its default precision (bf16 where the CPU has it natively): equal bytes, as each image
    goes through the network in the same batch as in the one-process run."""
    args = ['colorize', data / 'in', '--shards', data / 'train-{000000..000001}.tar', '--weights', weights,
            '--batch-size', 2]
    job = _torchrun(*args, '-o', tmp_path / 'two')
    assert _one_process(*args, '-o', tmp_path / 'one') == 1
    assert 'colorize: 12 done, 0 skipped (outputs exist), 1 failed in' in capsys.readouterr().out

    assert job.returncode != 0, job.stderr
    assert '[default0]:colorize: 12 done, 0 skipped (outputs exist), 1 failed by 2 processes in' in job.stdout
    assert '[default1]:colorize' not in job.stdout  # one summary, from rank 0
    assert f'[default1]:failed: {data / "in" / "zz_bad.jpg"}: expected JPEG, PNG, GIF, BMP, TIFF, WebP' in job.stderr
    assert '[default0]:failed' not in job.stderr
    one, two = _files(tmp_path / 'one'), _files(tmp_path / 'two')
    assert sorted(two) == [f'a{i}.png' for i in range(6)] + [f'train-00000{s}/k{s}{i}.png' for s in (0, 1) for i in range(3)]
    assert [name for name in one if one[name] != two[name]] == [] and sorted(one) == sorted(two)


def test_two_ranks_write_the_same_per_shard_features_as_one_process(data, weights, tmp_path, capsys):
    """features per shard, fp32 (the default): one .npy per shard, shard 0 by rank 0 and shard 1 by rank 1."""
    args = ['features', '--shards', data / 'train-00000[01].tar', '--per-shard', '--format', 'npy', '--layers',
            'conv2', 'conv5', '--pool', 3, '--weights', weights, '--batch-size', 2]
    job = _torchrun(*args, '-o', tmp_path / 'two')
    assert job.returncode == 0, job.stderr
    assert '[default0]:features: 6 done, 0 shards skipped (outputs exist), 0 failed by 2 processes' in job.stdout
    assert _one_process(*args, '-o', tmp_path / 'one') == 0
    capsys.readouterr()
    assert _files(tmp_path / 'one') == _files(tmp_path / 'two')
    table = np.load(tmp_path / 'two' / 'train-000001.npy')
    assert list(table['key']) == ['k10', 'k11', 'k12'] and table['conv5'].shape == (3, 256, 3, 3)


def _worker_pid(launcher_pid, rank):
    """The pid of torchrun's worker process with RANK=rank (DataLoader workers are its children, not torchrun's)."""
    for entry in Path('/proc').iterdir():
        try:
            ppid = int((entry / 'stat').read_text().rpartition(')')[2].split()[1])
            environ = (entry / 'environ').read_bytes().split(b'\0')
        except (OSError, ValueError):
            continue
        if ppid == launcher_pid and f'RANK={rank}'.encode() in environ:
            return int(entry.name)
    raise AssertionError(f'no worker with RANK={rank} under {launcher_pid}')


def test_a_killed_rank_loses_only_unfinished_files_and_a_rerun_finishes(weights, tmp_path):
    inputs, out = tmp_path / 'in', tmp_path / 'out'
    inputs.mkdir()
    count = 60
    for i in range(count):
        (inputs / f'{i:02d}.png').write_bytes(_png((64, 48), i))
    args = ['colorize', inputs, '-o', out, '--weights', weights, '--batch-size', 1]
    rank_1 = {f'{i:02d}.png' for i in range(1, count, 2)}  # batch b belongs to rank b % 2
    job = _torchrun(*args, popen=True)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and rank_1 & set(os.listdir(out))):
        assert job.poll() is None, job.communicate()
        assert time.monotonic() < deadline, 'rank 1 wrote nothing within 120 s'
        time.sleep(0.002)
    os.kill(_worker_pid(job.pid, 1), signal.SIGKILL)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode != 0, stderr  # torchrun stops the other rank and fails the job
    written = {p.name for p in out.glob('*.png')}
    assert rank_1 - written, 'rank 1 was not killed mid-way'
    for name in written:  # every file at an output path is a complete image
        with Image.open(out / name) as image:
            image.load()
            assert image.size == (64, 48)

    rerun = _torchrun(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert (f'colorize: {count - len(written)} done, {len(written)} skipped (outputs exist), 0 failed by 2 processes'
            in rerun.stdout)
    assert sorted(os.listdir(out)) == [f'{i:02d}.png' for i in range(count)]  # and no temporaries
