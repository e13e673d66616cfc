"""shards.py: brace expansion of shard lists, and the images inside a tar shard (each test writes its own)."""
import gzip
import io
import tarfile

import pytest

from splitbrain_hub.batch.shards import Member, expand_braces, index, read_member
from splitbrain_hub.errors import InputError

PATTERNS = {
    'train-{000000..000003}.tar': ['train-000000.tar', 'train-000001.tar', 'train-000002.tar', 'train-000003.tar'],
    'a{1..3}': ['a1', 'a2', 'a3'],
    'a{3..1}': ['a3', 'a2', 'a1'],
    'a{8..10}': ['a8', 'a9', 'a10'],
    'a{08..10}': ['a08', 'a09', 'a10'],
    '{a,b}{1..2}': ['a1', 'a2', 'b1', 'b2'],
    '{a,b{1..2}}-x': ['a-x', 'b1-x', 'b2-x'],
    '{x}{1..2}': ['{x}1', '{x}2'],
    'no-braces.tar': ['no-braces.tar'],
    'open{a,b': ['open{a,b'],
    '{,pre}fix': ['fix', 'prefix'],
}


@pytest.mark.parametrize('pattern', PATTERNS)
def test_expand_braces(pattern):
    assert expand_braces(pattern) == PATTERNS[pattern]


@pytest.mark.parametrize('pattern', [p for p in PATTERNS if p != 'open{a,b'])  # braceexpand raises there; bash keeps it
def test_expand_braces_agrees_with_the_braceexpand_package(pattern):
    braceexpand = pytest.importorskip('braceexpand')  # installed with webdataset (the test extra)
    assert expand_braces(pattern) == list(braceexpand.braceexpand(pattern))


def test_expand_braces_refuses_a_runaway_range():
    with pytest.raises(InputError, match=r'\{0\.\.99999999\}: expected a range of at most 1,000,000 numbers, got 100,000,000'):
        expand_braces('s-{0..99999999}.tar')
    with pytest.raises(InputError, match=r'expected at most 1,000,000 names, got 1,002,001'):
        expand_braces('{0..1000}{0..1000}')


def _member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_index_finds_the_images_and_read_member_their_bytes(tmp_path):
    shard = tmp_path / 'shard.tar'
    payloads = {'n01_10.jpg': b'jpeg bytes', 'photos/n01_11.PNG': b'png bytes!', 'a.b.webp': b'w'}
    with tarfile.open(shard, 'w') as tar:
        _member(tar, 'n01_10.jpg', payloads['n01_10.jpg'])
        _member(tar, 'n01_10.cls', b'3')  # a label: not an image
        folder = tarfile.TarInfo('photos')
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        _member(tar, 'photos/n01_11.PNG', payloads['photos/n01_11.PNG'])
        _member(tar, 'a.b.webp', payloads['a.b.webp'])
    members = index(shard)
    assert [(m.name, m.key) for m in members] == [('n01_10.jpg', 'n01_10'), ('photos/n01_11.PNG', 'photos/n01_11'),
                                                  ('a.b.webp', 'a.b')]
    assert [read_member(shard, m) for m in members] == list(payloads.values())


def test_bad_shards_are_refused_with_their_reason(tmp_path):
    with pytest.raises(InputError, match=r'none\.tar: expected a tar shard, but no such file exists'):
        index(tmp_path / 'none.tar')
    with pytest.raises(InputError, match='expected a tar shard, got a directory'):
        index(tmp_path)
    (tmp_path / 'text.tar').write_text('not a tar')
    with pytest.raises(InputError, match=r'text\.tar: expected an uncompressed tar file'):
        index(tmp_path / 'text.tar')
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as tar:
        _member(tar, 'a.jpg', b'x' * 2000)
    (tmp_path / 'packed.tar').write_bytes(gzip.compress(buffer.getvalue()))
    with pytest.raises(InputError, match=r'packed\.tar: expected an uncompressed tar file'):
        index(tmp_path / 'packed.tar')

    (tmp_path / 'cut.tar').write_bytes(buffer.getvalue()[:1200])  # the header and part of the data
    with pytest.raises(InputError, match=r'cut\.tar: truncated or corrupt tar file'):
        index(tmp_path / 'cut.tar')
    member = Member('a.jpg', 'a', 512, 2000)  # what index found before the shard was cut
    with pytest.raises(InputError, match=r'cut\.tar:a\.jpg: expected 2,000 bytes, got 688 \(truncated shard\)'):
        read_member(tmp_path / 'cut.tar', member)
    with pytest.raises(InputError, match=r'huge\.jpg: expected at most 268,435,456 bytes, got 268,435,457'):
        read_member(tmp_path / 'cut.tar', Member('huge.jpg', 'huge', 512, (256 << 20) + 1))
