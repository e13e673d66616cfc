"""The real photos the 227-px release learns colour from: four public git repositories at fixed commits.

    python -m training.photo_sources --mirrors=/work/.mirror     # extract, build shards, write the manifest

Each source is a bare git snapshot (``<mirrors>/<owner>+<name>/repo``, as the ``fetch`` tool brings it, or any
``git clone --bare``). Its photos at the pinned commit are extracted with ``git archive`` into
``<data>/sources/<name>/`` (outside the work tree), then ``training.build_shards`` turns all four into shards
under ``<data>/photos_256/`` and writes ``results/photos_manifest.json`` (and its counts, ``.md``). ``<data>`` is
``$SPLITBRAIN_HUB_DATA`` or ``~/.cache/splitbrain_hub/data``. Every step is deterministic: the same commits
give the same shards, byte for byte (with the same Pillow).
"""
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from splitbrain_hub import exits
from splitbrain_hub.errors import InputError
from splitbrain_hub.files import atomic_write_bytes
from training.build_shards import BuildConfig, build, summary_markdown

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get('SPLITBRAIN_HUB_DATA', '~/.cache/splitbrain_hub/data')).expanduser()
SHARDS = DATA / 'photos_256'
MANIFEST = REPO / 'results' / 'photos_manifest.json'


@dataclass(frozen=True)
class Source:
    name: str        # as the manifest and the shard keys name it
    repository: str  # owner/name on GitHub
    commit: str
    folders: tuple[str, ...]  # the folders of the commit that hold its photos


SOURCES = (
    Source('imagenette', 'thunderInfy/imagenette', 'b850f030ff0701c36a4adc8b928ea9483a46915b', ('train', 'val')),
    Source('imagewoof', 'q878787/imagewoof2-320', '874e58f0c1acebb0d90e40f48460d65322f09f85', ('train', 'val')),
    Source('scenes', 'zhabiki/paysage-classification', 'fec0a0d49774c7ed44a18c638d56e2be470ab1e9',
           ('train-scene classification/train',)),
    Source('imagenetsample', 'EliSchwartz/imagenet-sample-images', 'bc69043e2862758a1906c6a24a792bb28c6bb2ff',
           ('.',)),
)
CONFIG = BuildConfig(short_side=256, quality=90, min_short_side=96, near_grey_chroma=5.0, val_fraction=0.02,
                     seed=0, shard_size=1000, workers=2)


def extract(source: Source, mirrors: Path) -> Path:
    """The source's photo folders at its commit, as plain files under ``<data>/sources/<name>``."""
    target = DATA / 'sources' / source.name
    done = target / f'.extracted-{source.commit}'
    if done.is_file():
        return target
    git_dir = mirrors / source.repository.replace('/', '+') / 'repo'
    if not git_dir.is_dir():
        raise InputError(f'{git_dir}: expected a git snapshot of {source.repository} (fetch github:{source.repository})')
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(['git', f'--git-dir={git_dir}', 'archive', '--format=tar', source.commit,
                                '--', *source.folders], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=archive.stdout, mode='r|') as tar:
        tar.extractall(target, filter='data')
    if archive.wait() != 0:
        raise InputError(f'{git_dir}: git archive of {source.commit} failed')
    done.touch()
    return target


def main(argv: list[str]) -> int:
    flags = dict(arg.removeprefix('--').partition('=')[::2] for arg in argv)
    unknown = set(flags) - {'mirrors'}
    if unknown or 'mirrors' not in flags:
        print(f'usage: python -m training.photo_sources --mirrors=DIR (got {argv})', file=sys.stderr)
        return 2
    sources = {source.name: extract(source, Path(flags['mirrors'])) for source in SOURCES}
    provenance = {s.name: {'repository': s.repository, 'commit': s.commit, 'folders': list(s.folders)}
                  for s in SOURCES}
    manifest = build(sources, SHARDS, CONFIG, MANIFEST, provenance)
    atomic_write_bytes(MANIFEST.with_suffix('.md'), f'# The photo shards\n\n{summary_markdown(manifest)}'.encode())
    print({'totals': manifest['totals'], 'shards': len(manifest['shards'])})
    return 0


if __name__ == '__main__':
    sys.exit(exits.run(lambda: main(sys.argv[1:])))
