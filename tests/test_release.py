"""training/release.py: which run the one command goes on with (checkpoint, else last export, else shipped)."""
import json

import pytest

from splitbrain_hub.errors import WeightsError
from splitbrain_hub.hub import sha256_of, shipped_weights_path
from training import release


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(release, 'RUN', tmp_path / 'release')
    (tmp_path / 'release').mkdir()
    return tmp_path / 'release'


def _export(out_dir, step):
    (out_dir / 'export').mkdir(parents=True)
    (out_dir / 'export' / 'config.json').write_text(json.dumps({'training': {'step': step}}))


def test_a_new_run_starts_from_the_shipped_weights(run):
    assert release.current_run() == (run, release.STEPS, shipped_weights_path('splitbrain_alexnet', 'tinyimagenet_128'))


def test_a_checkpoint_is_resumed(run):
    _export(run, 300)
    (run / 'ckpt.pt').write_bytes(b'')
    assert release.current_run()[:2] == (run, release.STEPS)


def test_a_lost_checkpoint_continues_from_the_last_export_with_the_steps_left(run):
    _export(run, 1200)
    assert release.current_run() == (run / 'from_step_1200', release.STEPS - 1200, run / 'export')
    (run / 'from_step_1200' / 'ckpt.pt').parent.mkdir()
    (run / 'from_step_1200' / 'ckpt.pt').write_bytes(b'')
    assert release.current_run()[:2] == (run / 'from_step_1200', release.STEPS - 1200)
    _export(run / 'from_step_1200', 500)  # lost again: steps count from the first run's start
    (run / 'from_step_1200' / 'ckpt.pt').unlink()
    assert release.current_run() == (run / 'from_step_1700', release.STEPS - 1700, run / 'from_step_1200' / 'export')


def test_a_new_run_needs_the_96k_release_to_start_from(tmp_path, monkeypatch):
    start, other = tmp_path / 'start.safetensors', tmp_path / 'other.safetensors'
    start.write_bytes(b'the release to continue')
    other.write_bytes(b'later weights')
    monkeypatch.setattr(release, 'START_WEIGHTS_SHA256', sha256_of(start))
    release.check_start_weights(start)
    with pytest.raises(WeightsError, match=rf'other.safetensors: expected the 96,000-image release \(sha256 '
                                           rf'{sha256_of(start)[:12]}'):
        release.check_start_weights(other)
