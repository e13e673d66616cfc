"""training/build_shards.py: photo folders and lists -> deterministic shards and a manifest."""
import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from splitbrain_hub.batch.shards import index, read_member
from splitbrain_hub.errors import InputError
from training.build_shards import BuildConfig, build, is_greyscale, parse_args, reason_kind, split_of

CONFIG = BuildConfig(short_side=48, quality=90, min_short_side=16, near_grey_chroma=5.0, val_fraction=0.25,
                     seed=0, shard_size=3, workers=1)


def colour_photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def photos(tmp_path):
    """Eight colour photos and one of each kind of file the builder must leave out."""
    folder = tmp_path / 'photos'
    (folder / 'sub').mkdir(parents=True)
    for i in range(8):
        colour_photo(64 + 8 * i, 40 + 4 * i, seed=i).save(folder / 'sub' / f'colour{i}.png')
    (folder / 'copy.png').write_bytes((folder / 'sub' / 'colour0.png').read_bytes())
    Image.new('L', (60, 60), 90).save(folder / 'grey.png')
    Image.new('RGB', (60, 60), (120, 121, 120)).save(folder / 'near_grey.png')
    Image.new('RGB', (1, 1), (200, 10, 10)).save(folder / 'one_pixel.png')
    Image.new('RGB', (10, 30), (200, 10, 10)).save(folder / 'small.png')
    jpeg = io.BytesIO()
    colour_photo(64, 64, seed=9).save(jpeg, 'JPEG')
    (folder / 'truncated.jpg').write_bytes(jpeg.getvalue()[:len(jpeg.getvalue()) // 2])
    (folder / 'text.jpg').write_text('not an image')
    (folder / 'notes.txt').write_text('not listed: no image suffix')
    return folder


def build_to(tmp_path, name, sources, config=CONFIG):
    out, manifest = tmp_path / name, tmp_path / f'{name}.json'
    build(sources, out, config, manifest, progress=False)
    return out, json.loads(manifest.read_text())


def test_counts_every_file_with_its_reason(tmp_path, photos):
    _, manifest = build_to(tmp_path, 'a', {'mine': photos})
    counts = manifest['sources']['mine']['counts']
    assert counts['files'] == 15
    assert counts['train'] + counts['val'] == 8
    assert {k: counts[k] for k in ('duplicate', 'greyscale', 'near-grey', 'too small', 'unreadable')} == \
        {'duplicate': 1, 'greyscale': 1, 'near-grey': 1, 'too small': 1, 'unreadable': 3}
    reasons = {path: destination for _, path, _, destination in manifest['files']}
    assert reasons['copy.png'] == 'left out: duplicate of mine:sub/colour0.png' or \
        reasons['sub/colour0.png'] == 'left out: duplicate of mine:copy.png'
    assert 'truncated or corrupt JPEG' in reasons['truncated.jpg']
    assert 'expected JPEG, PNG' in reasons['text.jpg']
    assert '1x1' in reasons['one_pixel.png']
    assert reasons['small.png'].startswith('left out: too small: 10x30')
    assert 'notes.txt' not in reasons


def test_shards_hold_what_the_manifest_says(tmp_path, photos):
    out, manifest = build_to(tmp_path, 'a', {'mine': photos})
    for shard in manifest['shards']:
        data = (out / shard['name']).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard['sha256']
        assert len(index(out / shard['name'])) == shard['photos'] <= CONFIG.shard_size
    kept = [row for row in manifest['files'] if not row[3].startswith('left out')]
    for source, path, sha256, destination in kept:
        shard, member = destination.split(':')
        members = {m.name: m for m in index(out / shard)}
        photo = Image.open(io.BytesIO(read_member(out / shard, members[member])))
        original = Image.open(photos / path)
        assert min(photo.size) == min(CONFIG.short_side, min(original.size))  # down to short_side, never up
        assert abs(photo.width / photo.height - original.width / original.height) < 0.05
        with tarfile.open(out / shard) as tar:
            about = json.load(tar.extractfile(member.replace('.jpg', '.json')))
        assert about == {'source': source, 'path': path, 'sha256': sha256}
        assert sha256 == hashlib.sha256((photos / path).read_bytes()).hexdigest()


def test_two_builds_are_byte_identical(tmp_path, photos):
    out_a, manifest_a = build_to(tmp_path, 'a', {'mine': photos})
    out_b, manifest_b = build_to(tmp_path, 'b', {'mine': photos})
    assert manifest_a == manifest_b
    assert sorted(p.name for p in out_a.iterdir()) == sorted(p.name for p in out_b.iterdir())
    for shard in out_a.iterdir():
        assert shard.read_bytes() == (out_b / shard.name).read_bytes()


def test_a_list_of_files_is_a_source(tmp_path, photos):
    listing = tmp_path / 'list.txt'
    listing.write_text('# two photos\nphotos/sub/colour1.png\nphotos/sub/colour2.png\n')
    _, manifest = build_to(tmp_path, 'a', {'listed': listing, 'mine': photos})
    listed = [row for row in manifest['files'] if row[0] == 'listed']
    assert [row[1] for row in listed] == ['photos/sub/colour1.png', 'photos/sub/colour2.png']
    # the same photos in the second source are duplicates of the first's
    mine = {row[1]: row[3] for row in manifest['files'] if row[0] == 'mine'}
    assert mine['sub/colour1.png'] == 'left out: duplicate of listed:photos/sub/colour1.png'


def test_split_depends_on_the_photo_and_seed_only():
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    val = [split_of(s, BuildConfig(val_fraction=0.1)) == 'val' for s in shas]
    assert 150 < sum(val) < 250
    assert val == [split_of(s, BuildConfig(val_fraction=0.1)) == 'val' for s in shas]
    assert val != [split_of(s, BuildConfig(val_fraction=0.1, seed=1)) == 'val' for s in shas]


def test_greyscale_test():
    assert is_greyscale(Image.new('L', (4, 4)))
    assert is_greyscale(Image.new('RGB', (4, 4), (7, 7, 7)))
    assert not is_greyscale(Image.new('RGB', (4, 4), (7, 8, 7)))


def test_reason_kind():
    assert reason_kind('train-000001.tar:mine_0123.jpg') == 'train'
    assert reason_kind('left out: duplicate of mine:a.png') == 'duplicate'
    assert reason_kind('left out: too small: 10x30, short side under 16') == 'too small'


@pytest.mark.parametrize('argv, message', [
    ([], 'expected at least one --source'),
    (['--source=a=x', '--out=o'], 'expected at least one --source'),
    (['--source=a=x', '--out=o', '--manifest=m', '--quality=high'], '--quality: expected a int'),
    (['--source=a=x', '--out=o', '--manifest=m', '--colour=1'], 'expected --source=NAME=PATH'),
])
def test_bad_arguments(argv, message):
    with pytest.raises(InputError, match=message):
        parse_args(argv)


def test_bad_sources(tmp_path, photos):
    with pytest.raises(InputError, match='no such file or folder'):
        build({'gone': tmp_path / 'missing'}, tmp_path / 'out', CONFIG, tmp_path / 'm.json', progress=False)
    with pytest.raises(InputError, match='without'):
        build({'my_photos': photos}, tmp_path / 'out', CONFIG, tmp_path / 'm.json', progress=False)
