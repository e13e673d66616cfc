"""training/release_curve.py: which points the curve measures, how far each is from the goal, its table and plot."""
import json

import pytest

from splitbrain_hub.hub import sha256_of, shipped_weights_path
from training import release_curve


def _point(step, kodak_rebalanced, kodak_chroma):
    grey = dict(auc=0.8879, auc_rebalanced=0.6842, psnr_db=22.46, chroma_pred=0.01, chroma_true=16.81)
    ours = dict(grey, auc=0.8885, auc_rebalanced=kodak_rebalanced, chroma_pred=kodak_chroma)
    return dict(step=step, images_seen=96_000 + 64 * step, weights_sha256=str(step), temperature=0.38, kodak=ours,
                kodak_grey=grey, val=ours, val_grey=grey, val_images=1970)


def test_goal_gaps_reference_values():
    gaps = release_curve.goal_gaps(_point(0, 0.7339, 14.52))
    assert gaps['auc_rebalanced'] == pytest.approx(0.7339 - 0.6842 - 0.06)  # -0.0103: missed
    assert gaps['auc'] == pytest.approx(0.8885 - 0.8879 + 0.01)            # met
    assert gaps['chroma'] == pytest.approx(0.2 - (1 - 14.52 / 16.81))       # 13.6 % low: met
    assert release_curve.goal_gaps(_point(0, 0.7339, 21.0))['chroma'] < 0  # 25 % too much colour: missed


def test_points_are_the_start_weights_while_shipped_then_each_snapshot_by_step(tmp_path, monkeypatch):
    monkeypatch.setattr(release_curve, 'CURVE', tmp_path)
    for step in (1000, 200, 30):
        (tmp_path / f'step_{step}').mkdir()
        (tmp_path / f'step_{step}' / 'config.json').write_text(json.dumps({}))
    (tmp_path / 'step_5').mkdir()  # an export cut short: no config.json, not a point
    shipped = shipped_weights_path('splitbrain_alexnet', 'tinyimagenet_128')
    monkeypatch.setattr(release_curve, 'START_WEIGHTS_SHA256', sha256_of(shipped))
    assert release_curve.points() == [(0, str(shipped))] + [(s, str(tmp_path / f'step_{s}')) for s in (30, 200, 1000)]
    monkeypatch.setattr(release_curve, 'START_WEIGHTS_SHA256', '0' * 64)  # the start weights are no longer shipped
    assert [step for step, _ in release_curve.points()] == [30, 200, 1000]


def test_markdown_and_plot_have_every_point(tmp_path):
    curve = [_point(0, 0.7339, 14.52), _point(7500, 0.7500, 16.0)]
    table = release_curve.markdown(curve)
    assert '| 96,000 |' in table and '| 576,000 |' in table
    assert '-0.0103' in table  # the first point's rebalanced-AuC gap
    release_curve.plot(curve, tmp_path / 'curve.png')
    assert (tmp_path / 'curve.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
