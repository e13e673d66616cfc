"""Faults outside the photo (issue 29), made for real: a full disk and a read-only one are small tmpfs mounts
(root only: without it those tests skip, saying why), a wrong output path and corrupt weights are real files.

Each fault ends a command with one line on stderr and its documented exit status (``splitbrain_hub.exits``);
nothing is half-written; a folder run stopped by a full disk completes on a rerun, byte for byte.
"""
import math
import os
import re
import subprocess
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import splitbrain_hub
from splitbrain_hub import cli, exits
from splitbrain_hub.errors import StorageError, WeightsError
from splitbrain_hub.files import append_line
from training.train import read_metrics, save_checkpoint

PAGE = 4096  # tmpfs counts whole pages


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(bytes)``: a tmpfs of that size under tmp_path; always unmounted afterwards."""
    mounted = []

    def mount(size: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip('mounting a tmpfs needs root (CI runs as root)')
        folder = tmp_path / f'tmpfs{len(mounted)}'
        folder.mkdir()
        result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(folder)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f'cannot mount a tmpfs here: {result.stderr.strip()}')
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(['umount', str(folder)], check=True)


def _remount(folder: Path, options: str) -> None:
    subprocess.run(['mount', '-o', f'remount,{options}', str(folder)], check=True)


@pytest.fixture(scope='module')
def photos(tmp_path_factory) -> Path:
    """Six different small photos: crops of the packaged coffee photo."""
    folder = tmp_path_factory.mktemp('photos')
    coffee = Image.open(Path(splitbrain_hub.__file__).parent / 'assets' / 'coffee.jpg').convert('RGB')
    for i in range(6):
        coffee.crop((40 * i, 20 * i, 40 * i + 96, 20 * i + 72)).save(folder / f'p{i}.jpg')
    return folder


def _colorize(photos: Path, out: Path, weights: Path, *extra: str) -> int:
    return cli.main(['colorize', str(photos), '-o', str(out), '--weights', str(weights), '--workers', '0',
                     '--batch-size', '4', *extra])


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- the output side: a full disk, a read-only one, a file where a folder goes ---------------------

def test_a_full_disk_stops_the_run_and_a_rerun_completes_it_byte_for_byte(photos, weights, tmp_path, mount_tmpfs,
                                                                         capsys):
    assert _colorize(photos, tmp_path / 'undisturbed', weights) == exits.EXIT_OK
    expected = _files(tmp_path / 'undisturbed')
    pages = [math.ceil(len(data) / PAGE) for data in expected.values()]
    assert pages[2] > 1, 'the third output must not fit in the one page left over'
    disk = mount_tmpfs(PAGE * (pages[0] + pages[1] + 1))
    capsys.readouterr()

    assert _colorize(photos, disk / 'out', weights) == exits.EXIT_ENVIRONMENT
    line = _one_error_line(capsys)
    assert re.fullmatch(rf'error: colorize stopped: cannot write {disk}/out/p2\.png: no space left on device; '
                        r'2 done, 4 left \(free space .* rerun the same command: done outputs are skipped\)', line)
    assert _files(disk / 'out') == {name: expected[name] for name in ('p0.png', 'p1.png')}  # no temporary file

    _remount(disk, 'size=4m')  # space freed
    assert _colorize(photos, disk / 'out', weights) == exits.EXIT_OK
    assert '4 done, 2 skipped' in capsys.readouterr().out
    assert _files(disk / 'out') == expected  # the half-done batch ran whole again: the same bytes


def test_a_read_only_disk_is_one_line(photos, weights, mount_tmpfs, capsys):
    disk = mount_tmpfs(PAGE * 16)
    (disk / 'existing').mkdir()
    _remount(disk, 'ro')
    assert _colorize(photos, disk / 'out', weights) == exits.EXIT_ENVIRONMENT
    assert _one_error_line(capsys) == f'error: cannot create folder {disk}/out: read-only file system'
    assert _colorize(photos, disk / 'existing', weights) == exits.EXIT_ENVIRONMENT
    assert re.fullmatch(rf'error: colorize stopped: cannot write {disk}/existing/p0\.png: read-only file system; '
                        r'0 done, 6 left .*', _one_error_line(capsys))


def test_an_output_folder_that_is_a_file_is_one_line(photos, weights, tmp_path, capsys):
    taken = tmp_path / 'taken.png'
    taken.write_bytes(b'a file')
    assert _colorize(photos, taken, weights) == exits.EXIT_ENVIRONMENT
    assert _one_error_line(capsys) == f'error: cannot create folder {taken}: is a file, expected a folder'
    assert _colorize(photos, taken / 'below', weights) == exits.EXIT_ENVIRONMENT
    assert _one_error_line(capsys) == f'error: cannot create folder {taken}/below: is a file, expected a folder'


def test_the_traceback_only_with_debug(photos, weights, tmp_path, capsys, monkeypatch):
    taken = tmp_path / 'taken'
    taken.write_bytes(b'')
    monkeypatch.delenv(exits.DEBUG_ENV, raising=False)
    _colorize(photos, taken, weights)
    assert 'Traceback' not in capsys.readouterr().err
    _colorize(photos, taken, weights, '--debug')
    err = capsys.readouterr().err
    assert 'Traceback' in err and err.strip().endswith('is a file, expected a folder')
    monkeypatch.setenv(exits.DEBUG_ENV, '1')
    _colorize(photos, taken, weights)
    assert 'Traceback' in capsys.readouterr().err


def test_an_unexpected_error_is_a_bug_report_line(capsys, monkeypatch):
    monkeypatch.delenv(exits.DEBUG_ENV, raising=False)
    assert exits.run(lambda: {}['key']) == exits.EXIT_BUG
    assert _one_error_line(capsys) == (f"error: unexpected KeyError: 'key' (a bug: rerun with {exits.DEBUG_ENV}=1 "
                                       'and report the traceback)')


# --- the trainer's files ----------------------------------------------------------------------------

def test_a_checkpoint_that_does_not_fit_keeps_the_previous_one(mount_tmpfs):
    disk = mount_tmpfs(PAGE * 8)
    save_checkpoint(disk / 'ckpt.pt', {'step': 1, 'w': torch.zeros(10)})
    before = (disk / 'ckpt.pt').read_bytes()
    with pytest.raises(StorageError, match=rf'cannot write {disk}/ckpt\.pt: no space left on device') as caught:
        save_checkpoint(disk / 'ckpt.pt', {'step': 2, 'w': torch.zeros(100_000)})
    assert exits.exit_status(caught.value) == exits.EXIT_ENVIRONMENT
    assert os.listdir(disk) == ['ckpt.pt'] and (disk / 'ckpt.pt').read_bytes() == before


def test_metrics_stay_whole_lines_when_the_disk_fills_mid_line(mount_tmpfs):
    disk = mount_tmpfs(PAGE * 2)
    metrics = disk / 'metrics.jsonl'
    append_line(metrics, '{"step": 1, "pad": "%s"}' % ('x' * 4000))  # most of the first page
    (disk / 'filler').write_bytes(b'.' * PAGE)  # the second page: the disk is full
    with pytest.raises(StorageError, match='no space left on device'):
        append_line(metrics, '{"step": 2, "pad": "%s"}' % ('y' * 500))  # starts in the first page's slack
    assert metrics.read_bytes().endswith(b'"}\n') and [row['step'] for row in read_metrics(disk)] == [1]


def test_a_half_line_left_by_an_older_version_is_skipped(tmp_path):
    (tmp_path / 'metrics.jsonl').write_text('{"step": 1}\n{"step": 2, "lo')
    assert read_metrics(tmp_path) == [{'step': 1}]


def test_a_training_module_ends_with_one_line(tmp_path, capsys):
    from training import train
    status = exits.run(lambda: train.main([f'--data={tmp_path}/missing', f'--out_dir={tmp_path}/run']))
    assert status == exits.EXIT_USAGE
    assert str(tmp_path / 'missing') in _one_error_line(capsys)


def test_every_training_module_ends_through_exits_run():
    for module in sorted(Path(__file__).parent.parent.joinpath('training').glob('*.py')):
        _, runnable, main_block = module.read_text().rpartition("if __name__ == '__main__':")
        assert not runnable or 'exits.run(' in main_block, module.name


# --- corrupt or foreign weights ---------------------------------------------------------------------

def _corrupt(kind: str, good: Path, folder: Path) -> Path:
    path = folder / f'{kind}.safetensors'
    data = good.read_bytes()
    tensors = load_file(good)
    if kind == 'truncated':
        path.write_bytes(data[:len(data) // 2])
    elif kind == 'text':
        path.write_text('these are not weights\n')
    elif kind == 'other_architecture':
        save_file(timm.create_model('alexnet_lab').state_dict(), path)
    elif kind == 'nan':
        first = sorted(tensors)[0]
        tensors[first] = torch.full_like(tensors[first], float('nan'))
        save_file(tensors, path)
    else:  # fp16 with a tensor missing
        save_file({k: v.half() for k, v in sorted(tensors.items())[1:]}, path)
    return path


FOREIGN = r'expected the tensors of a SplitBrainAlexNet .* got a checkpoint with '
CORRUPT = {
    'truncated': r'not a safetensors file or truncated: ([\d,]+) of ([\d,]+) bytes',
    'text': r'not a safetensors file: expected a header of at most 100,000,000 bytes',
    'other_architecture': FOREIGN + r'\d+ \(features\.branches\.ab_half',
    'nan': r'expected finite weights, got NaN or inf in data_lab\.bias \(\d+ values\)',
    'fp16_missing': FOREIGN + r'1 \(data_lab\.bias\) missing, 0 unexpected',
}


@pytest.mark.parametrize('kind', CORRUPT)
def test_corrupt_weights_are_a_weights_error_naming_the_file(kind, weights, tmp_path, photos, capsys):
    bad = _corrupt(kind, weights / 'model.safetensors', tmp_path)
    expected = rf'{bad}: {CORRUPT[kind]}'
    with pytest.raises(WeightsError, match=expected):
        timm.create_model('splitbrain_alexnet', pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))
    # load_pretrained (load_model's) is the path of the CLI's --weights
    assert cli.main(['colorize', str(photos / 'p0.jpg'), '-o', str(tmp_path / 'out'), '--weights', str(bad)]) \
        == exits.EXIT_USAGE
    assert re.fullmatch(f'error: {expected}.*', _one_error_line(capsys))
    assert not (tmp_path / 'out').exists() or not list((tmp_path / 'out').iterdir())


def test_the_service_refuses_to_start_on_corrupt_weights(weights, tmp_path, capsys):
    pytest.importorskip('uvicorn')
    bad = _corrupt('truncated', weights / 'model.safetensors', tmp_path)
    assert cli.main(['serve', '--weights', str(bad), '--port', '0']) == exits.EXIT_USAGE
    assert re.fullmatch(rf'error: {bad}: not a safetensors file or truncated: .* bytes', _one_error_line(capsys))
