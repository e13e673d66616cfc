"""cli.py: the splitbrain-hub command on folders of good and bad files, resuming, atomic outputs, exit codes.

A randomly initialised checkpoint (saved with save_pretrained, at the network's smallest input size to keep
the runs short) stands in for the release: these tests check files, messages and exit codes.
"""
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from tar_shards import write_shard

import splitbrain_hub
from splitbrain_hub import cli
from splitbrain_hub.hub import sha256_of


def _photo(path, size=(40, 30), mode='RGB', seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8), 'RGBA').convert(mode).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """Two good images, one in a subfolder, three bad ones and a non-image file."""
    inputs = tmp_path / 'in'
    (inputs / 'sub').mkdir(parents=True)
    _photo(inputs / 'a.jpg')
    _photo(inputs / 'b.png', (36, 28), 'RGBA')
    _photo(inputs / 'sub' / 'c.png', (30, 30), 'L')
    (inputs / 'bad.jpg').write_text('not a photo')
    (inputs / 'empty.png').touch()
    buffer = io.BytesIO()
    Image.new('RGB', (64, 64), (200, 10, 10)).save(buffer, 'JPEG')
    (inputs / 'cut.jpg').write_bytes(buffer.getvalue()[:300])
    (inputs / 'notes.txt').write_text('ignored: not an image suffix')
    return inputs


def _run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_folder_with_good_and_bad_files(folder, weights, tmp_path, capsys):
    out_dir = tmp_path / 'out'
    status, out, err = _run(capsys, 'colorize', folder, '-o', out_dir, '--weights', weights, '--batch-size', 2)
    assert status == 1
    assert 'colorize: 2 done, 0 skipped (outputs exist), 3 failed' in out
    assert f'{folder / "bad.jpg"}: expected JPEG, PNG, GIF, BMP, TIFF, WebP, PPM/PGM/PBM data' in err
    assert f'{folder / "empty.png"}: expected image data, got an empty (0-byte) file' in err
    assert f'{folder / "cut.jpg"}: truncated or corrupt JPEG data' in err
    assert sorted(p.name for p in out_dir.iterdir()) == ['a.png', 'b.png']  # no subfolder without -r
    a, b = Image.open(out_dir / 'a.png'), Image.open(out_dir / 'b.png')
    assert (a.mode, a.size, b.mode, b.size) == ('RGB', (40, 30), 'RGBA', (36, 28))
    np.testing.assert_array_equal(np.asarray(b)[:, :, 3], np.asarray(Image.open(folder / 'b.png'))[:, :, 3])
    umask = os.umask(0o022)
    os.umask(umask)
    assert oct((out_dir / 'a.png').stat().st_mode & 0o777) == oct(0o666 & ~umask), 'outputs are ordinary files'


    # Recursive: the subfolder's image is added under its relative path, done ones are skipped.
    status, out, _ = _run(capsys, 'colorize', folder, '-r', '-o', out_dir, '--weights', weights)
    assert status == 1 and 'colorize: 1 done, 2 skipped (outputs exist), 3 failed' in out
    assert Image.open(out_dir / 'sub' / 'c.png').size == (30, 30)


def test_folder_entries_named_like_images_are_never_dropped_silently(folder, weights, tmp_path, capsys):
    (folder / 'gone.jpg').symlink_to(tmp_path / 'deleted.jpg')  # a broken link
    (folder / 'album.png').mkdir()                               # a folder named like an image
    os.mkfifo(folder / 'pipe.png')                                # not a regular file
    out_dir = tmp_path / 'out'
    status, out, err = _run(capsys, 'colorize', folder, '-o', out_dir, '--weights', weights)
    assert status == 1 and 'colorize: 2 done, 0 skipped (outputs exist), 6 failed' in out
    assert f'{folder / "gone.jpg"}: expected an image file, got a broken symbolic link' in err
    assert f'{folder / "album.png"}: expected an image file, got a folder (-r goes into folders)' in err
    assert f'{folder / "pipe.png"}: expected an image file, got something else (not a regular file)' in err
    # Recursing, the folder is gone into (it is empty) and no longer a failure.
    status, out, err = _run(capsys, 'colorize', folder, '-r', '-o', out_dir, '--weights', weights)
    assert status == 1 and '5 failed' in out and 'album.png' not in err


def test_all_good_inputs_exit_zero_and_overwrite_redoes(folder, weights, tmp_path, capsys):
    out_dir = tmp_path / 'out'
    args = ['colorize', folder / 'a.jpg', str(folder / '*.png'), '-o', out_dir, '--weights', weights]
    status, out, err = _run(capsys, *args)
    assert status == 1 and 'empty.png' in err  # the glob matched the empty file
    status, out, _ = _run(capsys, 'colorize', folder / 'a.jpg', folder / 'b.png', '-o', out_dir, '--weights', weights)
    assert status == 0 and 'colorize: 0 done, 2 skipped' in out
    before = (out_dir / 'a.png').stat().st_mtime_ns
    time.sleep(0.01)
    status, out, _ = _run(capsys, 'colorize', folder / 'a.jpg', '-o', out_dir, '--weights', weights, '--overwrite',
                          '--temperature', '0.2')
    assert status == 0 and 'colorize: 1 done, 0 skipped, 0 failed' in out.replace(' (outputs exist)', '')
    assert (out_dir / 'a.png').stat().st_mtime_ns > before


def test_missing_input_and_unmatched_glob_are_failures(weights, tmp_path, capsys):
    status, out, err = _run(capsys, 'lightness', tmp_path / 'nothere.jpg', str(tmp_path / 'none*.png'),
                            '-o', tmp_path / 'out', '--weights', weights)
    assert status == 1 and '0 done, 0 skipped (outputs exist), 2 failed' in out
    assert 'nothere.jpg: expected an image file, but no such file exists' in err
    assert 'none*.png: no such file, folder or matching file' in err


def test_lightness_writes_grey(folder, weights, tmp_path, capsys):
    status, _, _ = _run(capsys, 'lightness', folder / 'a.jpg', '-o', tmp_path / 'out', '--weights', weights,
                        '--device', 'cpu')
    assert status == 0 and Image.open(tmp_path / 'out' / 'a.png').mode == 'L'
    status, _, err = _run(capsys, 'lightness', folder / 'a.jpg', '-o', tmp_path / 'out', '--weights', weights,
                          '--device', 'tpu9')
    assert status == 2 and "error: device: expected 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu9'" in err


def test_features_safetensors_and_npy(folder, weights, tmp_path, capsys):
    status, out, _ = _run(capsys, 'features', folder / 'a.jpg', folder / 'b.png', '-o', tmp_path / 'st',
                          '--weights', weights, '--size', 128)
    assert status == 0 and 'features: 2 done' in out
    tensors = load_file(str(tmp_path / 'st' / 'a.safetensors'))
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        'conv1': (96, 30, 30), 'conv2': (256, 14, 14), 'conv3': (384, 6, 6), 'conv4': (384, 6, 6),
        'conv5': (256, 6, 6)}
    status, _, _ = _run(capsys, 'features', folder / 'a.jpg', '-o', tmp_path / 'npy', '--weights', weights,
                        '--format', 'npy', '--layers', 'conv5', 'conv2', '--pool', 3)
    assert status == 0
    assert sorted(p.name for p in (tmp_path / 'npy').iterdir()) == ['a.conv2.npy', 'a.conv5.npy']
    assert np.load(tmp_path / 'npy' / 'a.conv2.npy').shape == (256, 3, 3)


def test_info_names_the_weights_and_their_hash(weights, capsys):
    status, out, _ = _run(capsys, 'info', '--weights', weights)
    assert status == 0
    assert f'splitbrain-hub {splitbrain_hub.__version__}' in out and 'device: cpu' in out.replace('cuda', 'cpu')
    assert f'weights: {weights / "model.safetensors"}' in out
    assert f'sha256: {sha256_of(weights / "model.safetensors")}' in out


def test_usage_errors_exit_two(folder, weights, tmp_path, capsys):
    status, _, err = _run(capsys, 'colorize', folder, '-o', tmp_path / 'o', '--weights', tmp_path / 'none')
    assert status == 2 and 'error: ' in err and 'does not exist' in err
    _photo(tmp_path / 'a.png')
    status, _, err = _run(capsys, 'colorize', folder / 'a.jpg', tmp_path / 'a.png', '-o', tmp_path / 'o',
                          '--weights', weights)
    assert status == 2 and 'both would be written to' in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['colorize', str(folder), '-o', str(tmp_path), '--batch-size', '0'])
    assert exit_info.value.code == 2


def test_colorize_upsample_option_reaches_colorize(folder, weights, tmp_path, capsys):
    photo = np.asarray(Image.open(folder / 'a.jpg'))
    model = splitbrain_hub.inference.load_model(str(weights), 'cpu')
    for upsample in ('bilinear', 'guided'):
        status, _, _ = _run(capsys, 'colorize', folder / 'a.jpg', '-o', tmp_path / upsample, '--weights', weights,
                            '--upsample', upsample)
        assert status == 0
        expected = splitbrain_hub.colorize(photo, model=model, upsample=upsample)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / upsample / 'a.png')), expected)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['colorize', str(folder), '-o', str(tmp_path), '--upsample', 'nearest'])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):  # lightness has no --upsample
        cli.main(['lightness', str(folder), '-o', str(tmp_path), '--upsample', 'guided'])


def test_max_pixels_refuses_large_images(folder, weights, tmp_path, capsys):
    pillows_limit = Image.MAX_IMAGE_PIXELS
    status, _, err = _run(capsys, 'colorize', folder / 'a.jpg', '-o', tmp_path / 'o', '--weights', weights,
                          '--max-pixels', 1000, '--workers', 1)  # the limit reaches the decoding worker
    assert status == 1 and 'image is 40x30 = 1,200 pixels, more than the limit of 1,000 pixels' in err
    assert Image.MAX_IMAGE_PIXELS == pillows_limit  # an argument, not a process-wide setting


def test_a_new_subcommand_is_one_table_entry(monkeypatch, capsys):
    def add_arguments(parser):
        parser.add_argument('--name', default='world')
    monkeypatch.setitem(cli.COMMANDS, 'hello', cli.Command('say hello', add_arguments,
                                                           lambda args: print(f'hello {args.name}') or 3))
    assert _run(capsys, 'hello', '--name', 'brain')[:2] == (3, 'hello brain\n')


def test_killed_run_leaves_no_partial_file_and_a_rerun_finishes(weights, tmp_path, capsys):
    inputs, out_dir = tmp_path / 'in', tmp_path / 'out'
    inputs.mkdir()
    count = 24
    for i in range(count):
        _photo(inputs / f'{i:02d}.png', (64, 48), seed=i)
    command = [sys.executable, '-m', 'splitbrain_hub.cli', 'colorize', str(inputs), '-o', str(out_dir),
               '--weights', str(weights), '--batch-size', '1']
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out_dir.is_dir() and any(out_dir.glob('*.png'))):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, 'no output within 60 s'
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = sorted(out_dir.glob('*.png'))
    assert 1 <= len(written) < count, 'the run was not killed mid-way'
    for path in written:  # every file at an output path is a complete image
        with Image.open(path) as image:
            image.load()
            assert image.size == (64, 48)

    status, out, err = _run(capsys, *command[3:])  # the rerun in this process: one interpreter start less
    assert status == 0, err
    assert f'colorize: {count - len(written)} done, {len(written)} skipped (outputs exist), 0 failed' in out
    assert sorted(p.name for p in out_dir.iterdir()) == [f'{i:02d}.png' for i in range(count)]  # no temporaries




def _png_bytes(size, seed):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, 'PNG')
    return buffer.getvalue()


def test_list_file_outputs_mirror_the_listed_paths(weights, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ('2019', '2020'):
        (tmp_path / 'archive' / folder).mkdir(parents=True)
        _photo(tmp_path / 'archive' / folder / 'IMG_0001.jpg')
    (tmp_path / 'list.txt').write_text('# the archive\narchive/2019/IMG_0001.jpg\narchive/2020/IMG_0001.jpg\n'
                                       'archive/2021/IMG_0001.jpg\n')
    status, out, err = _run(capsys, 'colorize', '--from-file', 'list.txt', '-o', 'out', '--weights', weights)
    assert status == 1 and 'colorize: 2 done, 0 skipped (outputs exist), 1 failed' in out
    assert 'archive/2021/IMG_0001.jpg: expected an image file, but no such file exists' in err
    assert sorted(p.relative_to(tmp_path / 'out').as_posix() for p in (tmp_path / 'out').rglob('*.png')) == [
        'archive/2019/IMG_0001.png', 'archive/2020/IMG_0001.png']


def test_shards_per_image_and_per_shard(weights, tmp_path, capsys):
    for s in range(2):
        write_shard(tmp_path / f'train-{s}.tar', {f'n{s}/k{i}.png': _png_bytes((32 + i, 30), 10 * s + i) for i in range(3)}
               | {'bad.jpg': b'not a photo', 'k0.cls': b'1'})
    shards = str(tmp_path / 'train-{0..2}.tar')  # train-2.tar does not exist
    status, out, err = _run(capsys, 'colorize', '--shards', shards, '-o', tmp_path / 'png', '--weights', weights)
    assert status == 1 and 'colorize: 6 done, 0 skipped (outputs exist), 3 failed' in out
    assert f'{tmp_path / "train-0.tar"}:bad.jpg: expected JPEG, PNG, GIF, BMP, TIFF, WebP, PPM/PGM/PBM data' in err
    assert f'{tmp_path / "train-2.tar"}: expected a tar shard, but no such file exists' in err
    assert sorted(p.relative_to(tmp_path / 'png').as_posix() for p in (tmp_path / 'png').rglob('*.png')) == [
        f'train-{s}/n{s}/k{i}.png' for s in range(2) for i in range(3)]
    assert Image.open(tmp_path / 'png' / 'train-1' / 'n1' / 'k2.png').size == (34, 30)

    # One file per shard, the keys inside; the same rows as the per-image files, decoded in the main process.
    args = ['features', '--shards', shards, '--layers', 'conv1', 'conv5', '--weights', weights]
    status, out, _ = _run(capsys, *args, '--per-shard', '-o', tmp_path / 'st')
    assert status == 1 and 'features: 6 done, 0 shards skipped (outputs exist), 3 failed' in out
    status, _, _ = _run(capsys, *args, '-o', tmp_path / 'per-image', '--workers', 0)
    with safe_open(str(tmp_path / 'st' / 'train-1.safetensors'), 'pt') as f:
        assert json.loads(f.metadata()['keys']) == ['n1/k0', 'n1/k1', 'n1/k2']
        conv5 = f.get_tensor('conv5')
    assert conv5.shape == (3, 256, 4, 4)  # the 96 px network's conv5 grid
    torch.testing.assert_close(conv5[2], load_file(str(tmp_path / 'per-image' / 'train-1' / 'n1' / 'k2.safetensors'))['conv5'],
                               rtol=0, atol=0)
    status, out, _ = _run(capsys, *args, '--per-shard', '-o', tmp_path / 'st')  # a rerun opens only the missing shard
    assert status == 1 and 'features: 0 done, 2 shards skipped (outputs exist), 1 failed' in out


def test_input_usage_errors_exit_two(weights, tmp_path, capsys):
    status, _, err = _run(capsys, 'colorize', '-o', tmp_path, '--weights', weights)
    assert status == 2 and 'expected image files, folders or patterns, --from-file or --shards, got none' in err
    _photo(tmp_path / 'a.png')
    status, _, err = _run(capsys, 'features', tmp_path / 'a.png', '-o', tmp_path, '--per-shard', '--weights', weights)
    assert status == 2 and '--per-shard: expected --shards as the only inputs' in err


def test_amp_option_reaches_the_network(folder, weights, tmp_path, capsys):
    model = splitbrain_hub.load_pretrained(weights).eval()
    for amp in ('off', 'bf16'):
        status, _, _ = _run(capsys, 'colorize', folder / 'a.jpg', '-o', tmp_path / amp, '--weights', weights, '--amp', amp)
        expected = splitbrain_hub.colorize(folder / 'a.jpg', model=model, amp=amp)
        assert status == 0
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / amp / 'a.png')), np.asarray(expected))
    assert not np.array_equal(np.asarray(Image.open(tmp_path / 'off' / 'a.png')),
                              np.asarray(Image.open(tmp_path / 'bf16' / 'a.png'))), 'bf16 and fp32 should differ somewhere'
