"""What pip, torch.hub, the Hugging Face Hub and a new user see: licence, typing marker, dependencies,
model card, the command line's help."""
import ast
import configparser
import re
import subprocess
import sys
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import torch
from huggingface_hub import ModelCard

from splitbrain_hub.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
SETUP = configparser.ConfigParser()
SETUP.read(REPO / 'setup.cfg')


def _names(requirements: str) -> list:
    """'torch>=2.11\\nfoo[x]>=1' -> ['torch', 'foo'] (distribution names, normalised as pip does)."""
    names = [re.split(r'[<>=!~;\[ ]', line.strip())[0] for line in requirements.splitlines()]
    return [re.sub(r'[-_.]+', '-', name).lower() for name in names if name]


@cache
def _modules_of(distribution: str) -> set:
    """Top-level import names the installed ``distribution`` provides; for one not installed here (an extra
    the README's install leaves out), its own name as a module."""
    modules = {module for module, dists in _installed().items()
               if distribution in {re.sub(r'[-_.]+', '-', d).lower() for d in dists}}
    return modules or {distribution.replace('-', '_')}


@cache
def _installed() -> dict:
    """Top-level module -> distributions, read once: it scans every installed distribution's file list."""
    return packages_distributions()


def _imported_modules(folder: Path) -> set:
    """Top-level modules the .py files under ``folder`` import (statements and pytest.importorskip)."""
    found = set()
    for path in folder.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split('.')[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split('.')[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'importorskip'
                  and node.args and isinstance(node.args[0], ast.Constant)):
                found.add(node.args[0].value.split('.')[0])
    return found


def test_license_file_is_the_mit_license_setup_cfg_declares():
    assert SETUP['metadata']['license'] == 'MIT' and SETUP['metadata']['license_files'].strip() == 'LICENSE'
    text = (REPO / 'LICENSE').read_text()
    assert text.startswith('MIT License\n') and 'Permission is hereby granted, free of charge' in text


def test_package_is_marked_typed():
    assert (REPO / 'splitbrain_hub' / 'py.typed').is_file()
    assert 'py.typed' in [p.strip() for p in SETUP['options.package_data']['splitbrain_hub'].split(',')]


def test_every_declared_dependency_is_imported_somewhere():
    """No extra asks pip for a distribution that nothing in the repository imports."""
    used = set().union(*(_imported_modules(REPO / d) for d in ('splitbrain_hub', 'training', 'tests', 'benchmarks',
                                                                'scripts')))
    declared = _names(SETUP['options']['install_requires'])
    for extra, requirements in SETUP['options.extras_require'].items():
        declared += _names(requirements)
    unused = sorted(name for name in set(declared) if not _modules_of(name) & used)
    assert unused == [], f'declared in setup.cfg but imported nowhere: {unused}'


def test_hubconf_dependencies_cover_what_import_splitbrain_hub_loads():
    """torch.hub checks ``dependencies`` before loading: each required distribution the package pulls in is listed."""
    loaded = subprocess.run([sys.executable, '-c', 'import sys, splitbrain_hub; print(*sys.modules)'], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    loaded = {module.split('.')[0] for module in loaded}
    hubconf = torch.hub._import_module(torch.hub.MODULE_HUBCONF, str(REPO / 'hubconf.py'))
    needed = [name for name in _names(SETUP['options']['install_requires']) if _modules_of(name) & loaded]
    missing = [name for name in needed if not _modules_of(name) & set(hubconf.dependencies)]
    assert missing == [], f'import splitbrain_hub loads these, hubconf.dependencies does not name them: {missing}'
    torch.hub._check_dependencies(hubconf)


def test_model_card_has_the_hubs_front_matter():
    data = ModelCard.load(REPO / 'MODEL_CARD.md').data.to_dict()
    assert data['library_name'] == 'timm'
    assert data['pipeline_tag'] == 'image-feature-extraction'
    # The weights are ImageNet-derived: their licence is ImageNet's terms, not the code's MIT.
    assert data['license'] == 'other' and 'imagenet' in data['license_name']
    assert data['license_link'].startswith('https://')
    assert {'timm', 'colorization', 'self-supervised-learning'} <= set(data['tags'])
    assert data['datasets'] == ['tiny-imagenet-200'] and data['metrics'] == ['accuracy']


def test_command_line_help_opens_with_what_it_does_for_a_user():
    description = build_parser().format_help().split('\n\n')[1]
    first_sentence = ' '.join(description.split()).split('; ')[0]
    assert first_sentence.startswith('Colorize photos'), first_sentence
    assert 'lightness' in first_sentence and 'features' in first_sentence
    assert '``' not in description and 'exit code' not in description
