"""The work of an image command: inputs -> jobs (an image and the files it produces) -> parts for the ranks.

Inputs are files, folders (``recursive``: with subfolders) and glob patterns; the paths listed in list
files (one a line); and WebDataset tar shards (see ``shards.py``). Each image is a ``Job``; its outputs
go under the output folder at

* a file in a folder input: its path relative to that folder (same-named files in subfolders do not clash);
* a file named directly or by a glob: its name;
* a path from a list file: that path as listed, an absolute one without its leading '/' (a list is for
  archives spread over many folders, where the same name turns up in several);
* an image in a shard: ``<shard name>/<key>``; or, with one output per shard, the shard's rows in ``<shard name>``;

each with the command's suffix(es) in place of the image's.

``plan`` cuts the jobs into ``Part``s, the unit a rank takes (``distributed.share``): files in batches of
``batch_size`` consecutive jobs, exactly the batches a single process runs, so each image goes through
the network in the same batch however many ranks there are (results can depend on the batch in the
last bit); a shard whole, listed by the rank that takes it. ``batches_to_run`` then turns one rank's parts
into the batches still to do: a batch whose outputs all exist is skipped, and temporary files a killed
run left next to this rank's outputs are removed (never another rank's: it may be writing them now). A
batch a stopped run left half done runs whole again, its done images included (written again, the same
bytes), so each image still goes through the network in the batch of an undisturbed run: a rerun's outputs
are byte for byte those of a run never stopped.
"""
import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import InputError, SplitBrainError
from ..images import IMAGE_SUFFIXES
from . import shards
from .shards import Member

__all__ = ['Job', 'Part', 'Batch', 'Layout', 'plan', 'batches_to_run']

# (input, message naming it and why it failed): how failures are reported.
Failure = tuple[str, str]


@dataclass(frozen=True)
class Job:
    """One image to read and the files it produces (all must exist for it to count as done)."""
    source: Path                     # the image file, or the shard holding it
    outputs: tuple[Path, ...]        # empty when its shard's one output file holds it
    member: Member | None = None  # the image inside ``source`` when that is a shard

    @property
    def name(self) -> str:
        return f'{self.source}:{self.member.name}' if self.member else str(self.source)


@dataclass(frozen=True)
class Part:
    """What one rank takes as a whole: a batch of file jobs, or one shard."""
    jobs: tuple[Job, ...] = ()
    shard: Path | None = None


@dataclass(frozen=True)
class Batch:
    """The jobs of one forward pass. With one output file per shard, ``shard_output`` is that file and
    ``last`` marks the batch after which all of the shard's rows are there. ``done``: the jobs among ``jobs``
    whose outputs a stopped run already wrote (run again only to keep the batch as it was)."""
    jobs: tuple[Job, ...]
    shard_output: Path | None = None
    last: bool = False
    done: frozenset[Job] = frozenset()


@dataclass(frozen=True)
class Layout:
    """Where outputs go: per image one file per suffix in ``suffixes``; with ``shard_suffix``, an image
    from a shard goes to its shard's one file instead."""
    output_dir: Path
    suffixes: tuple[str, ...]
    shard_suffix: str | None = None


# --- every rank: the same plan --------------------------------------------------------------------

def plan(inputs: Sequence[str], list_files: Sequence[Path], shard_patterns: Sequence[str], recursive: bool,
         layout: Layout, batch_size: int) -> tuple[list[Part], list[Failure]]:
    """All the parts, in order, and the inputs that matched nothing.

    Raises:
        SplitBrainError: two inputs would be written to the same output; a list file is unreadable.
    """
    found, failures = _expand_inputs(inputs, recursive)
    for list_file in list_files:
        found += _listed(list_file)
    jobs = _file_jobs(found, layout)
    parts = [Part(jobs=tuple(jobs[i:i + batch_size])) for i in range(0, len(jobs), batch_size)]
    shard_paths, unmatched = _shard_paths(shard_patterns)
    return parts + [Part(shard=path) for path in shard_paths], failures + unmatched


def _expand_inputs(inputs: Sequence[str], recursive: bool) -> tuple[list[tuple[Path, Path]], list[Failure]]:
    """Inputs -> (file, its output path relative to the output folder), and the inputs that matched nothing."""
    found: list[tuple[Path, Path]] = []
    missing: list[Failure] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files, unusable = _folder_images(path, recursive)
            found += files
            missing += unusable
        elif path.exists() or not glob.has_magic(text):
            found.append((path, Path(path.name)))
        else:
            matches = sorted(Path(m) for m in glob.glob(text, recursive=recursive) if Path(m).is_file())
            found += [(m, Path(m.name)) for m in matches]
            if not matches:
                missing.append((text, f'{text}: no such file, folder or matching file'))
    return found, missing


def _folder_images(folder: Path, recursive: bool) -> tuple[list[tuple[Path, Path]], list[Failure]]:
    """A folder's files named like images, and its entries named like images that are not readable files
    (a broken link, a folder when not recursing, a device...): those are reported, never dropped silently."""
    files: list[tuple[Path, Path]] = []
    unusable: list[Failure] = []
    for entry in sorted(folder.rglob('*') if recursive else folder.iterdir()):
        if entry.suffix.lower() not in IMAGE_SUFFIXES or (recursive and entry.is_dir()):
            continue  # not an image's name; or a subfolder, whose images rglob lists themselves
        if entry.is_file():
            files.append((entry, entry.relative_to(folder)))
        elif entry.is_symlink() and not entry.exists():
            unusable.append((str(entry), f'{entry}: expected an image file, got a broken symbolic link'))
        elif entry.is_dir():
            unusable.append((str(entry), f'{entry}: expected an image file, got a folder (-r goes into folders)'))
        else:
            unusable.append((str(entry), f'{entry}: expected an image file, got something else (not a regular file)'))
    return files, unusable


def _listed(list_file: Path) -> list[tuple[Path, Path]]:
    """The paths in a list file, one a line (blank lines and lines starting with '#' skipped), in list order."""
    try:
        lines = Path(list_file).read_text(encoding='utf-8').splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f'{list_file}: expected a readable UTF-8 list of image paths ({type(e).__name__}: {e})') from e
    found = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith('#'):
            continue
        relative = Path(os.path.normpath(text.lstrip('/')))
        if relative.parts[:1] == ('..',):
            raise InputError(f'{list_file}, line {number}: expected a path that stays inside its folder tree '
                             f'(the output mirrors it), got {text!r}')
        found.append((Path(text), relative))
    return found


def _file_jobs(found: Sequence[tuple[Path, Path]], layout: Layout) -> list[Job]:
    jobs, owner = [], {}
    for source, relative in found:
        outputs = tuple(layout.output_dir / relative.with_suffix(suffix) for suffix in layout.suffixes)
        if outputs[0] in owner:
            if owner[outputs[0]] == source:
                continue  # the same file named twice
            raise SplitBrainError(f'{source} and {owner[outputs[0]]}: both would be written to {outputs[0]}; '
                                  'give them separately or rename one')
        owner[outputs[0]] = source
        jobs.append(Job(source, outputs))
    return jobs


def _shard_paths(patterns: Sequence[str]) -> tuple[list[Path], list[Failure]]:
    """Brace-expanded, globbed, sorted shard paths (a missing one is kept: its rank reports it) and the
    glob patterns that matched nothing."""
    paths: set[Path] = set()
    unmatched = []
    for pattern in patterns:
        for name in shards.expand_braces(pattern):
            matches = glob.glob(name) if glob.has_magic(name) else [name]
            if not matches:
                unmatched.append((name, f'{name}: no such shard or matching file'))
            paths.update(Path(m) for m in matches)
    by_name: dict[str, Path] = {}
    for path in sorted(paths):
        if _shard_name(path) in by_name:
            raise SplitBrainError(f'{path} and {by_name[_shard_name(path)]}: both would be written under '
                                  f'{_shard_name(path)!r}; give shards distinct names')
        by_name[_shard_name(path)] = path
    return sorted(paths), unmatched


def _shard_name(shard: Path) -> str:
    return shard.name[:-len('.tar')] if shard.name.endswith('.tar') else shard.name


# --- each rank: what is left of its share ---------------------------------------------------------

def batches_to_run(parts: Sequence[Part], layout: Layout, batch_size: int,
                   overwrite: bool) -> tuple[list[Batch], int, list[Failure]]:
    """One rank's parts -> (batches with work left, how many images or shard files are done already, failures).

    Shards are listed here, by the rank that took them.
    """
    shard_outputs = {part.shard: _shard_output(part.shard, layout) for part in parts if part.shard is not None}
    existing = _clean_and_check(p for p in shard_outputs.values() if p is not None)
    work: list[Batch] = []
    skipped, failures = 0, []
    for part in parts:
        if part.shard is None:
            work.append(Batch(part.jobs))
            continue
        output = shard_outputs[part.shard]
        if output in existing and not overwrite:
            skipped += 1
            continue
        try:
            jobs, bad = _shard_jobs(part.shard, layout)
        except InputError as e:
            failures.append((str(part.shard), str(e)))
            continue
        failures += bad
        cut = [tuple(jobs[i:i + batch_size]) for i in range(0, len(jobs), batch_size)]
        work += [Batch(chunk, output, last=output is not None and i == len(cut) - 1) for i, chunk in enumerate(cut)]

    existing = _clean_and_check(o for batch in work for job in batch.jobs for o in job.outputs)
    left = []
    for batch in work:
        # A batch keeps its place and composition (see the module docstring).
        done = frozenset(job for job in batch.jobs
                         if not overwrite and job.outputs and all(o in existing for o in job.outputs))
        skipped += len(done)
        if len(done) < len(batch.jobs) or batch.last:
            left.append(Batch(batch.jobs if len(done) < len(batch.jobs) else (), batch.shard_output, batch.last, done))
    return left, skipped, failures


def _shard_output(shard: Path, layout: Layout) -> Path | None:
    return layout.output_dir / (_shard_name(shard) + layout.shard_suffix) if layout.shard_suffix else None


def _shard_jobs(shard: Path, layout: Layout) -> tuple[list[Job], list[Failure]]:
    """The images of a shard as jobs, and its members that cannot be one (a key used twice, an unsafe name)."""
    members = shards.index(shard)
    if not members:
        raise InputError(f'{shard}: expected images ({", ".join(sorted(IMAGE_SUFFIXES))}) in the shard, found none')
    jobs, failures, seen = [], [], set()
    folder = layout.output_dir / _shard_name(shard)
    for member in members:
        name, key = f'{shard}:{member.name}', PurePosixPath(member.key)
        if member.key in seen:
            failures.append((name, f'{name}: expected each key once in the shard, got {member.key!r} again'))
            continue
        if not layout.shard_suffix and (key.is_absolute() or '..' in key.parts or not member.key.strip('/.')):
            failures.append((name, f'{name}: expected a relative member name without "..", as it becomes an output path'))
            continue
        seen.add(member.key)
        outputs = () if layout.shard_suffix else tuple(folder / (member.key + suffix) for suffix in layout.suffixes)
        jobs.append(Job(shard, outputs, member))
    return jobs, failures


def _clean_and_check(outputs: Iterable[Path]) -> set[Path]:
    """Which of ``outputs`` exist; temporary files left next to them by a killed run are removed.

    Each folder is listed once (a million outputs are a million ``stat`` calls otherwise, slow on network
    filesystems). ``files.atomic_write`` names a temporary ``.<name>.<random>.tmp``.
    """
    by_folder: dict[Path, set[str]] = {}
    for output in outputs:
        by_folder.setdefault(output.parent, set()).add(output.name)
    existing = set()
    for folder, names in by_folder.items():
        try:
            entries = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry in names:
                existing.add(folder / entry)
            elif entry.startswith('.') and entry.endswith('.tmp') and entry[1:-4].rpartition('.')[0] in names:
                (folder / entry).unlink(missing_ok=True)
    return existing
