"""The soak script (scripts/soak.py) end to end for a few seconds: a real server on loopback, every scenario's
answer as expected, and a clean SIGTERM drain. The long soak is the script's, not the suite's; its RSS
criterion needs minutes of warm-up and is not checked here."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('fastapi')
pytest.importorskip('uvicorn')
REPO = Path(__file__).resolve().parents[1]


def test_short_soak_answers_and_drains(tmp_path):
    out = tmp_path / 'soak.json'
    run = subprocess.run([sys.executable, str(REPO / 'scripts' / 'soak.py'), '--minutes', '0.1', '--warmup-s', '2',
                          '--clients', '3', '--workers', '1', '--rest-s', '1', '--out', str(out),
                          '--plot', str(tmp_path / 'soak.png')],
                         capture_output=True, text=True, timeout=240)
    assert out.is_file(), run.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = report['checks']
    assert checks['unexpected_answers']['ok'], checks['unexpected_answers']
    assert checks['temp_files_left']['ok'], checks['temp_files_left']
    assert checks['drain']['ok'], (checks['drain'], run.stderr[-2000:])
    answered = {status for per in report['summary']['statuses_by_scenario'].values() for status in per}
    assert '200' in answered and answered - {'200', '503', 'disconnected'}  # good photos and rejected uploads
    assert (tmp_path / 'soak.png').stat().st_size > 0
