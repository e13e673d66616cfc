"""WebDataset tar shards as inputs: shard lists written with braces, and the images inside one shard.

A WebDataset shard is a plain (uncompressed) tar whose members are the files of its samples, named
``<key>.<extension>``: ``n01443537_10.jpg`` next to ``n01443537_10.cls``. Here every member with an
image extension is one image, named by its **key**: the member's name without that extension
(``photos/n01443537_10.jpg`` -> ``photos/n01443537_10``). Other members (labels, captions) are ignored.

``index`` reads a shard's headers in one pass (``tarfile`` seeks past the data, no image is decoded) and
returns where each image's bytes are; ``read_member`` then reads just those bytes, so a DataLoader worker
can decode any image of the shard without going through the ones before it.

Shard lists are written the way WebDataset and bash write them: ``train-{000000..000146}.tar``.
``expand_braces`` does that expansion (the ``braceexpand`` package is not a dependency of this one).
"""
import re
import tarfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import InputError
from ..images import IMAGE_SUFFIXES

__all__ = ['IMAGE_SUFFIXES', 'MAX_MEMBER_BYTES', 'Member', 'expand_braces', 'index', 'read_member']

# A member larger than this is refused before it is read: no photo is this large, a hostile shard can be.
# The one cap of the project: training reads its shards through this module too.
MAX_MEMBER_BYTES = 256 << 20
# A pattern may not expand to more names than this (a typo like {0..999999999} would fill memory).
MAX_EXPANSION = 1_000_000

_RANGE = re.compile(r'(-?\d+)\.\.(-?\d+)')


# --- shard lists ----------------------------------------------------------------------------------

def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion, as WebDataset shard lists use it.

    ``{a,b}`` gives each alternative, ``{3..5}`` each number (``{08..10}``: zero-padded to the wider end,
    ``{5..3}`` counts down); several and nested groups combine left to right. Anything else, an unmatched
    brace or a group without ``,`` or ``..``, is kept as written.

    >>> expand_braces('train-{000..002}.tar')
    ['train-000.tar', 'train-001.tar', 'train-002.tar']
    >>> expand_braces('{a,b{1..2}}-x')
    ['a-x', 'b1-x', 'b2-x']

    Raises:
        InputError: the pattern stands for more than ``MAX_EXPANSION`` names.
    """
    names = _expand(pattern)
    if len(names) > MAX_EXPANSION:
        raise InputError(f'{pattern}: expected at most {MAX_EXPANSION:,} names, got {len(names):,}')
    return names


def _expand(pattern: str) -> list[str]:
    start = pattern.find('{')
    while start >= 0:
        end = _closing_brace(pattern, start)
        if end is None:
            return [pattern]  # an unmatched '{' is an ordinary character, as in bash
        alternatives = _alternatives(pattern[start + 1:end])
        if alternatives is not None:
            head, tails = pattern[:start], _expand(pattern[end + 1:])
            return [head + choice + tail for choice in alternatives for tail in tails]
        start = pattern.find('{', start + 1)  # a literal group such as {x}: look for the next one
    return [pattern]


def _closing_brace(text: str, start: int):
    depth = 0
    for i in range(start, len(text)):
        depth += {'{': 1, '}': -1}.get(text[i], 0)
        if depth == 0:
            return i
    return None


def _alternatives(body: str):
    """What one ``{...}`` stands for, each alternative expanded; None when it is not a brace group."""
    numbers = _RANGE.fullmatch(body)
    if numbers:
        first, last = numbers.groups()
        count = abs(int(last) - int(first)) + 1
        if count > MAX_EXPANSION:
            raise InputError(f'{{{body}}}: expected a range of at most {MAX_EXPANSION:,} numbers, got {count:,}')
        padded = any(len(n.lstrip('-')) > 1 and n.lstrip('-').startswith('0') for n in (first, last))
        width = max(len(first), len(last)) if padded else 0
        step = 1 if int(last) >= int(first) else -1
        return [f'{n:0{width}d}' for n in range(int(first), int(last) + step, step)]
    parts, depth, begin = [], 0, 0
    for i, char in enumerate(body):
        depth += {'{': 1, '}': -1}.get(char, 0)
        if char == ',' and depth == 0:
            parts.append(body[begin:i])
            begin = i + 1
    if not parts:
        return None
    parts.append(body[begin:])
    return [name for part in parts for name in _expand(part)]


# --- one shard ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    """One image inside a shard: its member name, key, and where its bytes are."""
    name: str
    key: str
    offset: int
    size: int


def index(shard: Path, suffixes: Collection[str] = IMAGE_SUFFIXES) -> list[Member]:
    """The members of a shard named with one of ``suffixes`` (by default its images), in tar order, from one
    pass over its headers. A member's key is its name without that suffix.

    Raises:
        InputError: the shard is missing, not an uncompressed tar, or truncated.
    """
    try:
        tar = tarfile.open(shard, 'r:')  # 'r:' refuses compressed tars: they cannot be read by offset
    except FileNotFoundError as e:
        raise InputError(f'{shard}: expected a tar shard, but no such file exists') from e
    except IsADirectoryError as e:
        raise InputError(f'{shard}: expected a tar shard, got a directory') from e
    except (OSError, tarfile.TarError) as e:
        raise InputError(f'{shard}: expected an uncompressed tar file, got unreadable data ({e})') from e
    members = []
    try:
        with tar:
            for info in tar:
                suffix = PurePosixPath(info.name).suffix
                if info.isfile() and suffix.lower() in suffixes:
                    members.append(Member(info.name, info.name[:-len(suffix)], info.offset_data, info.size))
    except (OSError, tarfile.TarError) as e:
        raise InputError(f'{shard}: truncated or corrupt tar file ({type(e).__name__}: {e})') from e
    return members


def read_member(shard: Path, member: Member) -> bytes:
    """The bytes of one image of ``shard``.

    Raises:
        InputError: the member is larger than ``MAX_MEMBER_BYTES`` or the shard ends before it does.
    """
    name = f'{shard}:{member.name}'
    if member.size > MAX_MEMBER_BYTES:
        raise InputError(f'{name}: expected at most {MAX_MEMBER_BYTES:,} bytes, got {member.size:,}')
    try:
        with open(shard, 'rb') as f:
            f.seek(member.offset)
            data = f.read(member.size)
    except OSError as e:
        raise InputError(f'{name}: cannot read the shard ({type(e).__name__}: {e})') from e
    if len(data) != member.size:
        raise InputError(f'{name}: expected {member.size:,} bytes, got {len(data):,} (truncated shard)')
    return data
