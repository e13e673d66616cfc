"""jobs.py: inputs -> jobs -> the parts ranks take -> what is left of one rank's share (each test builds its files)."""
import io
import tarfile
from pathlib import Path

import pytest

from splitbrain_hub.batch.jobs import Layout, batches_to_run, plan
from splitbrain_hub.errors import InputError, SplitBrainError


def _files(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b'not decoded here')
    return folder


def _shard(path, names):
    with tarfile.open(path, 'w') as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b'x'))
    return path


def test_files_are_cut_into_the_batches_one_process_runs_and_shards_follow_whole(tmp_path):
    folder = _files(tmp_path / 'in', [f'{i}.jpg' for i in range(7)] + ['notes.txt'])
    for name in ('s-1.tar', 's-0.tar'):
        _shard(tmp_path / name, ['a.jpg'])
    layout = Layout(tmp_path / 'out', ('.png',))
    parts, missing = plan([str(folder), str(tmp_path / 'none*.jpg')], [], [str(tmp_path / 's-{0..1}.tar')],
                          recursive=False, layout=layout, batch_size=3)
    assert [[job.source.name for job in part.jobs] for part in parts[:3]] == [
        ['0.jpg', '1.jpg', '2.jpg'], ['3.jpg', '4.jpg', '5.jpg'], ['6.jpg']]
    assert [part.shard for part in parts[3:]] == [tmp_path / 's-0.tar', tmp_path / 's-1.tar']  # sorted
    assert parts[0].jobs[0].outputs == (tmp_path / 'out' / '0.png',)
    assert missing == [(str(tmp_path / 'none*.jpg'), f'{tmp_path / "none*.jpg"}: no such file, folder or matching file')]


def test_a_rank_reruns_half_done_batches_whole_and_removes_only_its_own_temporaries(tmp_path):
    folder = _files(tmp_path / 'in', [f'{i}.jpg' for i in range(6)])
    out = tmp_path / 'out'
    layout = Layout(out, ('.png',))
    parts, _ = plan([str(folder)], [], [], False, layout, batch_size=2)  # rank 0 of 2 takes parts 0 and 2
    out.mkdir()
    (out / '0.png').write_bytes(b'done')
    stale_mine, in_flight_other = out / '.1.png.k3j_x9a2.tmp', out / '.2.png.b8c7d6e5.tmp'
    stale_mine.write_bytes(b'half')
    in_flight_other.write_bytes(b'rank 1 is writing this')
    batches, skipped, failures = batches_to_run(parts[0::2], layout, batch_size=2, overwrite=False)
    # 0.jpg runs again beside 1.jpg, as in the run that wrote it: a rerun's outputs are that run's bytes.
    assert [[job.source.name for job in batch.jobs] for batch in batches] == [['0.jpg', '1.jpg'], ['4.jpg', '5.jpg']]
    assert [sorted(job.source.name for job in batch.done) for batch in batches] == [['0.jpg'], []]
    assert (skipped, failures) == (1, [])
    (out / '1.png').write_bytes(b'done')
    batches, skipped, _ = batches_to_run(parts[0::2], layout, batch_size=2, overwrite=False)
    assert ([[job.source.name for job in batch.jobs] for batch in batches], skipped) == ([['4.jpg', '5.jpg']], 2)
    assert not stale_mine.exists() and in_flight_other.exists()
    batches, skipped, _ = batches_to_run(parts[0::2], layout, batch_size=2, overwrite=True)
    assert (len(batches[0].jobs), skipped) == (2, 0)


def test_list_file_paths_are_mirrored_under_the_output_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _files(tmp_path / 'a', ['x.jpg'])
    _files(tmp_path / 'b' / 'c', ['x.jpg'])
    listing = tmp_path / 'list.txt'
    listing.write_text(f'# photos\na/x.jpg\n\n  {tmp_path}/b/c/x.jpg  \n')
    parts, _ = plan([], [listing], [], False, Layout(Path('out'), ('.png',)), batch_size=8)
    assert [(str(job.source), str(job.outputs[0])) for job in parts[0].jobs] == [
        ('a/x.jpg', 'out/a/x.png'), (f'{tmp_path}/b/c/x.jpg', f'out/{str(tmp_path).lstrip("/")}/b/c/x.png')]
    listing.write_text('a/x.jpg\n../elsewhere/y.jpg\n')
    with pytest.raises(InputError, match=r'list\.txt, line 2: expected a path that stays inside its folder tree'):
        plan([], [listing], [], False, Layout(Path('out'), ('.png',)), batch_size=8)
    with pytest.raises(InputError, match=r'none\.txt: expected a readable UTF-8 list of image paths'):
        plan([], [tmp_path / 'none.txt'], [], False, Layout(Path('out'), ('.png',)), batch_size=8)


def test_shard_images_become_jobs_and_bad_members_failures(tmp_path):
    shard = _shard(tmp_path / 'train-0.tar', ['a.jpg', 'a.cls', 'sub/b.png', 'a.png', '../evil.jpg', 'c.jpg'])
    layout = Layout(tmp_path / 'out', ('.png',))
    parts, _ = plan([], [], [str(shard)], False, layout, batch_size=2)
    batches, skipped, failures = batches_to_run(parts, layout, batch_size=2, overwrite=False)
    assert [[job.outputs[0].relative_to(tmp_path / 'out').as_posix() for job in batch.jobs] for batch in batches] == [
        ['train-0/a.png', 'train-0/sub/b.png'], ['train-0/c.png']]
    assert failures == [
        (f'{shard}:a.png', f"{shard}:a.png: expected each key once in the shard, got 'a' again"),
        (f'{shard}:../evil.jpg', f'{shard}:../evil.jpg: expected a relative member name without "..", as it becomes an '
                                 'output path')]

    per_shard = Layout(tmp_path / 'feats', ('.npy',), shard_suffix='.npy')
    batches, _, _ = batches_to_run(parts, per_shard, batch_size=2, overwrite=False)
    assert [(batch.shard_output.name, batch.last, len(batch.jobs)) for batch in batches] == [
        ('train-0.npy', False, 2), ('train-0.npy', True, 2)]  # ../evil.jpg is a key here, not a path
    (tmp_path / 'feats').mkdir()
    (tmp_path / 'feats' / 'train-0.npy').write_bytes(b'done')
    shard.unlink()  # a done shard is not even opened
    assert batches_to_run(parts, per_shard, batch_size=2, overwrite=False) == ([], 1, [])
    _, _, failures = batches_to_run(parts, layout, batch_size=2, overwrite=False)
    assert failures == [(str(shard), f'{shard}: expected a tar shard, but no such file exists')]


def test_shard_lists_and_name_clashes(tmp_path):
    (tmp_path / 'x').mkdir()
    for path in (tmp_path / 'empty.tar', tmp_path / 'x' / 'empty.tar'):
        _shard(path, ['label.cls'])
    layout = Layout(tmp_path / 'out', ('.png',))
    with pytest.raises(SplitBrainError, match=r"both would be written under 'empty'"):
        plan([], [], [str(tmp_path / '{,x/}empty.tar')], False, layout, batch_size=2)
    parts, missing = plan([], [], [str(tmp_path / 'empty.tar'), str(tmp_path / 'n*.tar')], False, layout, batch_size=2)
    assert missing == [(str(tmp_path / 'n*.tar'), f'{tmp_path / "n*.tar"}: no such shard or matching file')]
    _, _, failures = batches_to_run(parts, layout, batch_size=2, overwrite=False)
    assert failures[0][1].startswith(f'{tmp_path / "empty.tar"}: expected images (.bmp, .gif')
