"""Image folders (or lists of image files) -> WebDataset tar shards to train colour on, and a manifest.

    python -m training.build_shards --source=photos=/data/my_photos --out=~/.cache/splitbrain_hub/data/mine \\
        --manifest=mine_manifest.json
    python -m training.build_shards --source=imagenet=train_files.txt --source=scenes=/data/scenes --out=...

Each ``--source=NAME=PATH`` is a folder (every file with an image suffix below it, sorted by relative path)
or a text file listing image files, one per line (relative lines are relative to the list's folder). Every
file is one photo, decided on and recorded in the manifest:

- duplicates: a file whose bytes have the sha256 of one seen before (in source order) is left out;
- unreadable, truncated or corrupt files, files that are not images, and photos whose short side is under
  ``min_short_side`` are left out with the decoder's reason;
- greyscale photos (a grey mode, or R == G == B everywhere) and near-grey ones (95 % of the pixels under
  ``near_grey_chroma`` Lab units of chroma, measured on a thumbnail) are left out: there is no colour to learn;
- the rest go, with short side ``short_side`` (aspect kept; a smaller photo is never upscaled), re-encoded
  as JPEG at ``quality`` with full-resolution chroma (4:4:4), into ``train-NNNNNN.tar`` or ``val-NNNNNN.tar``.

The split is fixed per photo by its content and the seed (sha256 of ``seed/sha256 of the file`` below
``val_fraction``), so it never depends on which other files are present; within a split, photos are ordered
by the same kind of hash, so every shard mixes the sources. The tar headers carry no time or owner, so the
same inputs, options and Pillow version give byte-identical shards. Each shard and the manifest are written
to a temporary file and renamed (a killed build leaves no half shard).

Members per photo: ``<key>.jpg`` and ``<key>.json`` (source, path, sha256 of the original file).
"""
import dataclasses
import hashlib
import io
import json
import multiprocessing
import sys
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

from splitbrain_hub import exits
from splitbrain_hub.batch.shards import MAX_MEMBER_BYTES
from splitbrain_hub.errors import InputError
from splitbrain_hub.files import atomic_write
from splitbrain_hub.images import IMAGE_SUFFIXES, decode_image, greyscale_mask
from splitbrain_hub.ops.color import rgb_to_lab

MAX_PIXELS = 64_000_000  # a photo to train on is never larger; a hostile file may claim to be
THUMBNAIL_SIDE = 64      # the near-grey test looks at this much of a photo


@dataclass(frozen=True)
class BuildConfig:
    short_side: int = 256          # photos are resized down to this short side, never up
    quality: int = 90              # JPEG quality of the re-encoded photos (chroma at full resolution)
    min_short_side: int = 96       # a smaller photo is left out as too small
    near_grey_chroma: float = 5.0  # left out if the 95th percentile of chroma is under this (Lab units)
    val_fraction: float = 0.02     # share of each source held out for validation
    seed: int = 0                  # fixes the split and the order inside each split
    shard_size: int = 1000         # photos per shard (before what the checks leave out)
    workers: int = 2               # processes that decode and encode


@dataclass(frozen=True)
class Candidate:
    source: str
    path: str      # as the manifest names it: relative to the source folder, or as listed
    file: Path     # where it is read
    sha256: str


def list_source(name: str, location: Path) -> list[tuple[str, Path]]:
    """(manifest path, file) of every image file of one source, sorted by manifest path."""
    if location.is_dir():
        files = [p for p in location.rglob('*') if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        return sorted((p.relative_to(location).as_posix(), p) for p in files)
    if location.is_file():
        lines = [line.strip() for line in location.read_text().splitlines()]
        listed = [(line, location.parent / line) for line in lines if line and not line.startswith('#')]
        return sorted(listed)
    raise InputError(f'--source={name}={location}: expected a folder or a text file listing images, '
                     'but no such file or folder exists')


def split_of(sha256: str, config: BuildConfig) -> str:
    return 'val' if _unit_hash(f'{config.seed}/{sha256}') < config.val_fraction else 'train'


def _unit_hash(text: str) -> float:
    """A number in [0, 1) fixed by ``text``."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16) / 16 ** 15


def key_of(candidate: Candidate) -> str:
    # WebDataset keys end at the first dot; source names are checked to hold none.
    return f'{candidate.source}_{candidate.sha256[:16]}'


# --- one photo: the checks and the re-encoding ------------------------------------------------

def is_greyscale(image: Image.Image) -> bool:
    """A grey mode, or an RGB photo with R == G == B everywhere (the package's own test)."""
    if image.mode in ('L', 'LA', '1', 'I', 'I;16', 'F'):
        return True
    rgb = torch.from_numpy(np.asarray(image.convert('RGB'))).permute(2, 0, 1)
    return bool(greyscale_mask(rgb[None]))


def chroma_p95(image: Image.Image) -> float:
    """95th percentile of Lab chroma sqrt(a² + b²) over a thumbnail of ``image`` (RGB)."""
    thumbnail = image.copy()
    thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.BILINEAR)
    rgb = torch.from_numpy(np.asarray(thumbnail, dtype=np.float32) / 255).permute(2, 0, 1)
    ab = rgb_to_lab(rgb)[1:]
    return float(torch.quantile(ab.pow(2).sum(0).sqrt().flatten(), 0.95))


def prepare(file: Path, name: str, config: BuildConfig) -> tuple[bytes | None, str]:
    """(JPEG bytes, '') for a photo to keep, or (None, the reason it is left out)."""
    try:
        if file.is_file() and file.stat().st_size > MAX_MEMBER_BYTES:
            return None, f'unreadable: larger than {MAX_MEMBER_BYTES:,} bytes'
        image = decode_image(file, max_pixels=MAX_PIXELS, name=name)
    except InputError as e:
        return None, f'unreadable: {e}'
    if min(image.size) < config.min_short_side:
        return None, f'too small: {image.width}x{image.height}, short side under {config.min_short_side}'
    if is_greyscale(image):
        return None, 'greyscale'
    image = image.convert('RGB')
    chroma = chroma_p95(image)
    if chroma < config.near_grey_chroma:
        return None, f'near-grey: 95th-percentile chroma {chroma:.2f} < {config.near_grey_chroma}'
    scale = config.short_side / min(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, 'JPEG', quality=config.quality, subsampling=0, optimize=False)
    return buffer.getvalue(), ''


def _prepare_task(task: tuple[Path, str, BuildConfig]) -> tuple[bytes | None, str]:
    return prepare(*task)


def _init_worker() -> None:
    torch.set_num_threads(1)  # the parallelism is the worker processes


# --- shards ---------------------------------------------------------------------------------------

def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of (name, data), with no time, owner or mode that could differ between runs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w', format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_file(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def collect(sources: dict[str, Path]) -> tuple[list[Candidate], list[list[str]]]:
    """Every source file, hashed: (candidates to decode, manifest rows of duplicates)."""
    candidates, duplicates, first = [], [], {}
    for name, location in sources.items():
        for path, file in list_source(name, location):
            try:
                sha256 = hashlib.sha256(file.read_bytes()).hexdigest()
            except OSError as e:
                duplicates.append([name, path, '', f'left out: unreadable: {e.strerror or e}'])
                continue
            if sha256 in first:
                duplicates.append([name, path, sha256, f'left out: duplicate of {first[sha256]}'])
                continue
            first[sha256] = f'{name}:{path}'
            candidates.append(Candidate(name, path, file, sha256))
    return candidates, duplicates


def build(sources: dict[str, Path], out: Path, config: BuildConfig, manifest_path: Path,
          provenance: dict[str, dict] | None = None, progress: bool = True) -> dict:
    """Build the shards of ``sources`` into ``out`` and write the manifest; returns the manifest.

    ``provenance``: what the manifest says of each source instead of its location (e.g. repository, commit).
    """
    for name in sources:
        if not name or '.' in name or '/' in name or '_' in name:
            raise InputError(f'--source={name}: expected a name without ".", "/" or "_"')
    out.mkdir(parents=True, exist_ok=True)
    candidates, rows = collect(sources)
    splits = {'train': [], 'val': []}
    for candidate in candidates:
        splits[split_of(candidate.sha256, config)].append(candidate)
    shards = []
    with multiprocessing.get_context('fork').Pool(config.workers, initializer=_init_worker) as pool:
        for split, members in splits.items():
            members.sort(key=lambda c: _unit_hash(f'{config.seed}/order/{c.sha256}'))
            for number, start in enumerate(range(0, len(members), config.shard_size)):
                chunk = members[start:start + config.shard_size]
                shard = f'{split}-{number:06d}.tar'
                tasks = [(c.file, f'{c.source}:{c.path}', config) for c in chunk]
                kept = []
                for candidate, (jpeg, reason) in zip(chunk, pool.imap(_prepare_task, tasks, chunksize=8)):
                    if jpeg is None:
                        rows.append([candidate.source, candidate.path, candidate.sha256, f'left out: {reason}'])
                        continue
                    key = key_of(candidate)
                    about = {'source': candidate.source, 'path': candidate.path, 'sha256': candidate.sha256}
                    kept += [(f'{key}.jpg', jpeg), (f'{key}.json', json.dumps(about, sort_keys=True).encode())]
                    rows.append([candidate.source, candidate.path, candidate.sha256, f'{shard}:{key}.jpg'])
                data = tar_bytes(kept)
                write_file(out / shard, data)
                shards.append({'name': shard, 'photos': len(kept) // 2, 'bytes': len(data),
                               'sha256': hashlib.sha256(data).hexdigest()})
                if progress:
                    print(f'{shard}: {len(kept) // 2} photos', file=sys.stderr, flush=True)
    manifest = make_manifest(sources, config, rows, shards, provenance or {})
    atomic_write(manifest_path, lambda tmp: Path(tmp).write_text(manifest_text(manifest)))
    return manifest


def manifest_text(manifest: dict) -> str:
    """JSON with one line per file row, so a rebuild's diff shows exactly the files that changed."""
    head = json.dumps({k: v for k, v in manifest.items() if k != 'files'}, indent=1)
    rows = ',\n'.join(json.dumps(row, ensure_ascii=False) for row in manifest['files'])
    return f'{head[:-2]},\n "files": [\n{rows}\n ]\n}}\n'


def reason_kind(destination: str) -> str:
    """'train' / 'val' for a photo that went into a shard, else the reason's first words ('too small')."""
    if not destination.startswith('left out: '):
        return destination.split('-', 1)[0]
    return destination.removeprefix('left out: ').split(':', 1)[0].split(' of ', 1)[0]


def make_manifest(sources: dict[str, Path], config: BuildConfig, rows: list[list[str]], shards: list[dict],
                  provenance: dict[str, dict]) -> dict:
    rows.sort(key=lambda row: (list(sources).index(row[0]), row[1]))
    counts = {name: Counter() for name in sources}
    for source, _, _, destination in rows:
        counts[source]['files'] += 1
        counts[source][reason_kind(destination)] += 1
    return {
        'recipe': {**dataclasses.asdict(config), 'pillow': PIL.__version__, 'jpeg_subsampling': '4:4:4'},
        'sources': {name: {**provenance.get(name, {'location': str(location)}),
                           'counts': dict(sorted(counts[name].items()))}
                    for name, location in sources.items()},
        'totals': dict(sorted(sum(counts.values(), Counter()).items())),
        'shards': shards,
        'files_columns': ['source', 'path', 'sha256', 'destination (shard:member, or left out: reason)'],
        'files': rows,
    }


def summary_markdown(manifest: dict) -> str:
    """The manifest's counts as a Markdown table: one row per source, then the totals."""
    kinds = sorted({k for source in manifest['sources'].values() for k in source['counts']} - {'files', 'train', 'val'})
    recipe = manifest['recipe']
    lines = [f"Short side {recipe['short_side']} px (never upscaled), JPEG quality {recipe['quality']} "
             f"({recipe['jpeg_subsampling']}), validation share {recipe['val_fraction']} per source (seed "
             f"{recipe['seed']}), near-grey: 95th-percentile chroma < {recipe['near_grey_chroma']}, too small: "
             f"short side < {recipe['min_short_side']}; Pillow {recipe['pillow']}; {len(manifest['shards'])} shards.", '',
             '| source | commit | files | train | val | ' + ' | '.join(f'left out: {k}' for k in kinds) + ' |',
             '|---' * (5 + len(kinds)) + '|']
    rows = [(name, source.get('commit', '')[:12], source['counts']) for name, source in manifest['sources'].items()]
    for name, commit, counts in [*rows, ('**all**', '', manifest['totals'])]:
        cells = [counts.get(k, 0) for k in ('files', 'train', 'val', *kinds)]
        lines.append(f'| {name} | {commit} | ' + ' | '.join(f'{c:,}' for c in cells) + ' |')
    return '\n'.join(lines) + '\n'


def parse_args(argv: list[str]) -> tuple[dict[str, Path], Path, Path, BuildConfig]:
    """``--source=NAME=PATH`` (repeatable), ``--out=DIR``, ``--manifest=FILE`` and every BuildConfig field."""
    sources, paths, fields = {}, {}, {f.name: f.type for f in dataclasses.fields(BuildConfig)}
    values = {}
    for arg in argv:
        key, eq, value = arg.removeprefix('--').partition('=')
        if key == 'source' and '=' in value:
            name, _, location = value.partition('=')
            sources[name] = Path(location).expanduser()
        elif key in ('out', 'manifest') and eq:
            paths[key] = Path(value).expanduser()
        elif key in fields and eq:
            try:
                values[key] = {int: int, float: float}[fields[key]](value)
            except ValueError as e:
                raise InputError(f'--{key}: expected a {fields[key].__name__}, got {value!r}') from e
        else:
            raise InputError(f'{arg}: expected --source=NAME=PATH, --out=DIR, --manifest=FILE or --key=value '
                             f'with key in {sorted(fields)}')
    if not sources or set(paths) != {'out', 'manifest'}:
        raise InputError('expected at least one --source=NAME=PATH, and --out=DIR and --manifest=FILE')
    return sources, paths['out'], paths['manifest'], BuildConfig(**values)


def main(argv: list[str] | None = None) -> int:
    try:
        sources, out, manifest_path, config = parse_args(sys.argv[1:] if argv is None else argv)
        manifest = build(sources, out, config, manifest_path)
    except InputError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(json.dumps({'totals': manifest['totals'], 'shards': len(manifest['shards'])}))
    return 0


if __name__ == '__main__':
    sys.exit(exits.run(main))
