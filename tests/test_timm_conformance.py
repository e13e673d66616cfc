"""timm's own model tests (tests/test_models.py of timm's source distribution) on our models.

The sdist of the installed timm version is fetched once with pip from the package registry into
``$SPLITBRAIN_TIMM_TESTS`` (default ``~/.cache/splitbrain_hub/timm-tests``); .ci/run fetches it ahead.
"""
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import timm

CACHE = Path(os.environ.get('SPLITBRAIN_TIMM_TESTS', Path.home() / '.cache' / 'splitbrain_hub' / 'timm-tests'))


def _timm_tests_dir() -> Path:
    root = CACHE / f'timm-{timm.__version__}'
    if not (root / 'tests' / 'test_models.py').is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--no-binary', ':all:',
                        f'timm=={timm.__version__}', '-d', str(CACHE)], check=True, timeout=300)
        with tarfile.open(CACHE / f'timm-{timm.__version__}.tar.gz') as archive:
            archive.extractall(CACHE, filter='data')
    return root


def test_timm_model_tests_pass():
    root = _timm_tests_dir()
    env = dict(os.environ, TORCH_BACKEND='splitbrain_hub', HF_HUB_OFFLINE='1')
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', 'tests/test_models.py', '-q', '-p', 'no:cacheprovider', '-p', 'no:warnings',
         '--tb=short', '-rA', '-k', 'splitbrain or alexnet_lab'],
        cwd=root, env=env, capture_output=True, text=True, timeout=600)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    passed = re.findall(r'^PASSED (\S+)', result.stdout, flags=re.M)
    # forward, backward, cfgs, torchscript, features, fx (3) per model, plus pretrained loading.
    for test in ('test_model_forward[', 'test_model_backward[', 'test_model_default_cfgs[',
                 'test_model_forward_torchscript[', 'test_model_forward_features[', 'test_model_forward_fx[',
                 'test_model_backward_fx[', 'test_model_load_pretrained[', 'test_model_features_pretrained['):
        assert any(test in p and 'splitbrain_alexnet' in p for p in passed), f'{test} did not pass:\n{report}'
