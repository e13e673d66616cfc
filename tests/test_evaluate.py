"""training/evaluate.py: the linear probe on problems with known answers, the colorization metrics on hand-made cases."""
import math

import pytest
import torch

from splitbrain_hub.color import lab_to_rgb, rgb_to_lab
from splitbrain_hub.errors import InputError
from splitbrain_hub.quantize import ab_bin_centers, hard_encode
from training.evaluate import (
    PROBE_GRIDS, ProbeConfig, ab_error_auc, chroma, colour_mask, load_model, nearest_ab_bins, probe_features, psnr,
    train_probe,
)

FAST = ProbeConfig(epochs=10, batch_size=64)


def _clusters(classes: int, per_class: int, dim: int, seed: int):
    """Well-separated Gaussian clusters: a linearly separable problem."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + torch.randn(len(labels), dim, generator=g) * 0.5, labels


def test_probe_separable_features_reach_full_accuracy():
    train_x, train_y = _clusters(10, 40, 64, seed=0)
    val_x, val_y = _clusters(10, 20, 64, seed=0)  # same centres (same seed), fresh noise below
    val_x = val_x + torch.randn(val_x.shape, generator=torch.Generator().manual_seed(1)) * 0.1
    assert train_probe(train_x, train_y, val_x, val_y, 10, FAST) >= 0.99


def test_probe_random_labels_give_chance():
    g = torch.Generator().manual_seed(0)
    train_x, val_x = torch.randn(2000, 32, generator=g), torch.randn(2000, 32, generator=g)
    train_y, val_y = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    accuracy = train_probe(train_x, train_y, val_x, val_y, 10, FAST)
    # chance is 0.1; 2000 val samples give a standard deviation of about 0.007
    assert abs(accuracy - 0.1) < 0.035


def test_probe_is_deterministic_and_accepts_float16():
    x, y = _clusters(5, 20, 16, seed=2)
    a = train_probe(x.half(), y, x.half(), y, 5, ProbeConfig(epochs=2, batch_size=16))
    b = train_probe(x.half(), y, x.half(), y, 5, ProbeConfig(epochs=2, batch_size=16))
    assert a == b


def test_probe_features_have_the_paper_sizes():
    model = load_model('gaussian', seed=0).model
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    features = probe_features(model, images, input_size=128)
    sizes = {layer: f.shape[1] for layer, f in features.items()}
    assert sizes == {'conv1': 9600, 'conv2': 9216, 'conv3': 9600, 'conv4': 9600, 'conv5': 9216}
    assert all(f.dtype == torch.float16 and f.shape[0] == 2 and (f >= 0).all() for f in features.values())
    assert PROBE_GRIDS['conv1'] == 10


def test_gaussian_model_is_fixed_by_its_seed():
    assert load_model('gaussian', seed=3).sha256 == load_model('gaussian', seed=3).sha256
    assert load_model('gaussian', seed=3).sha256 != load_model('gaussian', seed=4).sha256


def test_load_model_rejects_a_missing_file(tmp_path):
    with pytest.raises(InputError, match='--weights'):
        load_model(str(tmp_path / 'nothing.safetensors'))


def test_auc_of_a_perfect_prediction_is_one():
    ab = torch.randn(2, 2, 8, 8) * 40
    assert ab_error_auc(ab, ab) == 1.0
    assert ab_error_auc(ab, ab, weights=torch.rand(2, 8, 8)) == 1.0


def test_auc_of_grey_prediction_of_a_grey_image_is_one():
    grey = torch.rand(1, 1, 8, 8, dtype=torch.float64).expand(-1, 3, -1, -1)
    true_ab = rgb_to_lab(grey)[:, 1:]
    # color.py maps grey to |ab| < 0.005 (its white point rounding), an area loss below 0.005 / 150
    assert ab_error_auc(torch.zeros_like(true_ab), true_ab) == pytest.approx(1.0, abs=4e-5)


@pytest.mark.parametrize('error, expected', [(30.0, 0.8), (75.0, 0.5), (150.0, 0.0), (400.0, 0.0)])
def test_auc_of_a_constant_error(error, expected):
    # an error e on every pixel: the CDF is 0 below e and 1 from e on, so the area is (150 - e) / 150
    true_ab = torch.randn(1, 2, 4, 4) * 20
    pred_ab = true_ab + torch.tensor([0.6, 0.8]).view(1, 2, 1, 1) * error  # |(0.6, 0.8)| = 1
    assert ab_error_auc(pred_ab, true_ab) == pytest.approx(expected, abs=1e-6)


def test_rebalanced_auc_weighs_pixels():
    true_ab = torch.zeros(1, 2, 1, 2)
    pred_ab = torch.tensor([[[[0.0, 75.0]], [[0.0, 0.0]]]])  # pixel 0 exact (area 1), pixel 1 error 75 (0.5)
    assert ab_error_auc(pred_ab, true_ab) == pytest.approx(0.75)
    assert ab_error_auc(pred_ab, true_ab, weights=torch.tensor([[[3.0, 1.0]]])) == pytest.approx(0.875)


def test_auc_rejects_mismatched_shapes():
    with pytest.raises(InputError, match='pred_ab'):
        ab_error_auc(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5))


def test_psnr_reference_values():
    target = torch.zeros(2, 3, 4, 4)
    prediction = target.clone()
    prediction[0] += 0.1    # mse 0.01 -> 20 dB
    prediction[1] += 0.5    # mse 0.25 -> 10 log10(4) = 6.0206 dB
    assert psnr(prediction, target).tolist() == pytest.approx([20.0, 10 * math.log10(4)])
    assert psnr(target, target).isinf().all()


def test_chroma_and_colour_mask():
    assert chroma(torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)).item() == pytest.approx(5.0)
    grey = torch.full((1, 3, 4, 4), 7, dtype=torch.uint8)
    colour = grey.clone()
    colour[0, 0, 0, 0] = 8
    assert colour_mask(torch.cat([grey, colour])).tolist() == [False, True]


def test_lab_round_trip_of_ground_truth_gives_high_psnr():
    # the metric pipeline re-assembles RGB from L and ab: ground-truth ab must give back the image
    rgb = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert (psnr(lab_to_rgb(rgb_to_lab(rgb)), rgb) > 60).all()


def test_nearest_ab_bins_equal_hard_encode():
    centers = ab_bin_centers()
    in_gamut = rgb_to_lab(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)))[:, 1:]
    anywhere = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 80  # many out of gamut
    for ab in (in_gamut, anywhere):
        assert torch.equal(nearest_ab_bins(ab, centers), hard_encode(ab, centers))


def test_table2_markdown_gives_seed_spread_and_missing_rows():
    from training.reproduce_table2 import ROWS, markdown
    records = [dict(row='gaussian', seed=seed, layer=layer, top1=top1, images_seen=0)
               for seed, top1 in ((0, 0.05), (1, 0.07)) for layer in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')]
    table = dict(protocol=dict(train_per_class=50, input_size=128), results=records, train_count=10000,
                 val_count=10000, missing={'split_brain_cl': 'not trained'})
    text = markdown(table)
    assert '| Gaussian | 0 | 0,1 | 6.0 ± 1.0 |' in text
    assert 'missing: not trained' in text
    assert len([line for line in text.splitlines() if line.startswith('| ')]) == 1 + 2 * len(ROWS) - 1
