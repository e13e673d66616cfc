"""Short coverage-guided fuzz runs of the readers of foreign bytes (scripts/fuzz.py; the long runs are the
script's, not the suite's). libFuzzer first replays every file of ``tests/fuzz_corpus/<target>/``: the valid
seeds and each input that once crashed a reader, so a regression fails here before any mutation."""
import resource
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('atheris')
REPO = Path(__file__).resolve().parents[1]
SECONDS = 5


@pytest.mark.parametrize('target', ['caffe', 'image'])
def test_short_fuzz_finds_only_typed_errors(target, tmp_path):
    # libFuzzer bounds memory by the process's peak RSS (getrusage), and Linux carries the peak across exec: a
    # child of this pytest process starts at pytest's own peak. The script's 2048 MB are counted above that floor.
    rss_limit_mb = 2048 + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    run = subprocess.run([sys.executable, str(REPO / 'scripts' / 'fuzz.py'), target, '--seconds', str(SECONDS),
                          '--rss-mb', str(rss_limit_mb),
                          '--artifacts', str(tmp_path / 'artifacts'), '--corpus-out', str(tmp_path / 'corpus')],
                         capture_output=True, text=True, timeout=SECONDS + 120, cwd=tmp_path)
    crashes = sorted(p.name for p in (tmp_path / 'artifacts').iterdir()) if (tmp_path / 'artifacts').is_dir() else []
    assert run.returncode == 0 and not crashes, f'{crashes}\n{run.stderr[-3000:]}'
    assert 'stat::number_of_executed_units' in run.stderr
