"""Count the project's import graph: what ARCHITECTURE.md's "closing note" figures are made of.

    python -m scripts.import_graph            # this checkout
    python -m scripts.import_graph /tmp/base  # another checkout (e.g. a worktree of an older commit)

What is counted, over ``splitbrain_hub/``, ``training/`` and ``hubconf.py`` (every ``.py`` file, parsed
with ``ast``; imports inside functions count too, string imports such as uvicorn's do not):

- modules: ``.py`` files; folders: the folders holding them (packages, ``training/``);
- edges: distinct (importing module, imported project module) pairs. ``from . import x`` and
  ``from .x import y`` are edges to module ``x`` (to ``x.y`` when that is a module); a package's
  ``__init__`` is a module like any other;
- against the layering: edges from a lower layer to a higher one, layers as ARCHITECTURE.md lists them
  (``LAYERS`` below: first match of a module-name prefix wins), and any package module importing
  ``training``. Deprecation aliases are counted in the top layer: they only point down;
- private names: distinct (module, name) pairs where a module imports a ``_name`` defined in another
  project module (``from m import _name``).
"""
import ast
import sys
from pathlib import Path

ROOTS = ('splitbrain_hub', 'training', 'hubconf.py')

# ARCHITECTURE.md's layers, lowest first: a module may import its own layer and the ones before it.
# Old module names (before the subpackages) are listed where they belonged, so the script reads any commit.
LAYERS: tuple[tuple[str, ...], ...] = (
    ('splitbrain_hub.errors', 'splitbrain_hub.files', 'splitbrain_hub.exits', 'splitbrain_hub.version',
     'splitbrain_hub.deprecation'),
    ('splitbrain_hub.ops',),
    ('splitbrain_hub.images',),
    ('splitbrain_hub.hub',),
    ('splitbrain_hub.models',),
    ('splitbrain_hub.prediction', 'splitbrain_hub.inference'),
    ('splitbrain_hub.batch', 'splitbrain_hub.deploy'),
    ('splitbrain_hub.serve', 'splitbrain_hub.cli'),
    ('splitbrain_hub',),  # the package's face and the deprecation aliases at its root
    ('training', 'hubconf'),
)
# Where the modules of the flat layout (main 5446f41) sit in LAYERS.
OLD_NAMES = {
    'splitbrain_hub.color': 'splitbrain_hub.ops', 'splitbrain_hub.quantize': 'splitbrain_hub.ops',
    'splitbrain_hub.upsample': 'splitbrain_hub.ops', 'splitbrain_hub.precision': 'splitbrain_hub.ops',
    'splitbrain_hub.weights': 'splitbrain_hub.hub', 'splitbrain_hub.export': 'splitbrain_hub.deploy',
    'splitbrain_hub.caffe': 'splitbrain_hub.deploy', 'splitbrain_hub.jobs': 'splitbrain_hub.batch',
    'splitbrain_hub.loader': 'splitbrain_hub.batch', 'splitbrain_hub.shards': 'splitbrain_hub.batch',
    'splitbrain_hub.distributed': 'splitbrain_hub.batch',
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def project_files(root: Path) -> list[Path]:
    files = [root / 'hubconf.py'] if (root / 'hubconf.py').is_file() else []
    for folder in ROOTS[:2]:
        files += sorted(p for p in (root / folder).rglob('*.py') if '__pycache__' not in p.parts)
    return files


def is_alias(tree: ast.Module) -> bool:
    """A deprecation alias: a module whose docstring says so (they re-export and warn)."""
    return 'Deprecated alias' in (ast.get_docstring(tree) or '')


def layer_of(module: str, alias: bool) -> int:
    if alias:
        return len(LAYERS) - 2
    for old, new in OLD_NAMES.items():
        if module == old or module.startswith(old + '.'):
            module = new
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + '.') for p in prefixes):
            return rank
    raise ValueError(f'{module}: not in LAYERS')


def imports(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> list[tuple[str, str | None]]:
    """(imported project module, imported name or None) for each import statement of ``module``."""
    found = []
    package = module if is_package else module.rpartition('.')[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split('.')[0] in ('splitbrain_hub',
                                                                                                 'training')]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if target.split('.')[0] not in ('splitbrain_hub', 'training', 'hubconf'):
                continue
            for alias in node.names:
                submodule = f'{target}.{alias.name}'
                found.append((submodule, None) if submodule in known else (target, alias.name))
    return found


def count(root: Path) -> dict[str, object]:
    files = project_files(root)
    trees = {module_name(p, root): (p, ast.parse(p.read_text())) for p in files}
    known = set(trees)
    folders = {p.parent for p in files if p.parent != root}
    edges, against, private = set(), set(), set()
    for module, (path, tree) in trees.items():
        alias = is_alias(tree)
        for target, name in imports(tree, module, path.name == '__init__.py', known):
            while target not in known and '.' in target:
                target = target.rpartition('.')[0]
            if target not in known or target == module:
                continue
            edges.add((module, target))
            target_alias = is_alias(trees[target][1])
            if (module.startswith('splitbrain_hub') and target.startswith('training')) or \
                    layer_of(module, alias) < layer_of(target, target_alias):
                against.add((module, target))
            if name is not None and name.startswith('_') and not name.startswith('__'):
                private.add((module, f'{target}.{name}'))
    return dict(modules=len(trees), folders=len(folders), edges=sorted(edges), against=sorted(against),
                private=sorted(private))


def main(argv: list[str]) -> None:
    root = Path(argv[0] if argv else '.').resolve()
    result = count(root)
    print(f'{root}: {result["modules"]} modules in {result["folders"]} folders, {len(result["edges"])} import edges, '
          f'{len(result["against"])} against the layering, {len(result["private"])} private names imported '
          'across modules')
    for label in ('against', 'private'):
        for item in result[label]:
            print(f'  {label}: {item[0]} -> {item[1]}')


if __name__ == '__main__':
    main(sys.argv[1:])
