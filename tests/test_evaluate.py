"""training/evaluate.py: the linear probe on problems with known answers, the colorization metrics on hand-made cases."""
import math

import pytest
import torch

from splitbrain_hub.errors import InputError
from splitbrain_hub.ops.color import lab_to_rgb, rgb_to_lab
from training.evaluate import (
    PROBE_GRIDS,
    ProbeConfig,
    ab_error_auc,
    chroma,
    load_frozen_model,
    probe_features,
    psnr,
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
    model = load_frozen_model('gaussian', seed=0).model
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    features = probe_features(model, images, input_size=128)
    sizes = {layer: f.shape[1] for layer, f in features.items()}
    assert sizes == {'conv1': 9600, 'conv2': 9216, 'conv3': 9600, 'conv4': 9600, 'conv5': 9216}
    assert all(f.dtype == torch.float16 and f.shape[0] == 2 and (f >= 0).all() for f in features.values())
    assert PROBE_GRIDS['conv1'] == 10


def test_gaussian_model_is_fixed_by_its_seed():
    assert load_frozen_model('gaussian', seed=3).sha256 == load_frozen_model('gaussian', seed=3).sha256
    assert load_frozen_model('gaussian', seed=3).sha256 != load_frozen_model('gaussian', seed=4).sha256


def test_load_model_rejects_a_missing_file(tmp_path):
    with pytest.raises(InputError, match='--weights'):
        load_frozen_model(str(tmp_path / 'nothing.safetensors'))


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


def test_chroma():
    assert chroma(torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)).item() == pytest.approx(5.0)


def test_lab_round_trip_of_ground_truth_gives_high_psnr():
    # the metric pipeline re-assembles RGB from L and ab: ground-truth ab must give back the image
    rgb = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert (psnr(lab_to_rgb(rgb_to_lab(rgb)), rgb) > 60).all()


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


# --- colorization of a photo folder at full resolution --------------------------------------------

def _write_shard(path, images):
    """A Tiny ImageNet-style train shard: (image.jpg, image.cls) pairs, class 0."""
    import io
    import tarfile

    from PIL import Image
    with tarfile.open(path, 'w') as tar:
        for i, image in enumerate(images):
            for suffix, data in (('jpg', _encode(Image.fromarray(image), 'JPEG', quality=100)), ('cls', b'0')):
                info = tarfile.TarInfo(f'{i:06d}.{suffix}')
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _encode(image, fmt, **kwargs) -> bytes:
    import io
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def photo_folder(tmp_path):
    """Two colour photos of different sizes and one greyscale photo (left out), plus a one-image train shard
    whose mean ab is known (one flat colour)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    photos = tmp_path / 'photos'
    photos.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(photos / 'a.png')
    Image.fromarray(rng.integers(0, 256, (48, 36, 3), dtype=np.uint8)).save(photos / 'b.png')
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).convert('RGB').save(photos / 'grey.png')
    (photos / 'notes.txt').write_text('not a photo')
    shards = tmp_path / 'shards'
    shards.mkdir()
    _write_shard(shards / 'train-000000.tar', [np.full((64, 64, 3), (200, 80, 60), dtype=np.uint8)])
    return photos, shards


@pytest.fixture(scope='module')
def small_model():
    import timm

    from training.evaluate import LoadedModel
    torch.manual_seed(0)
    model = timm.create_model('splitbrain_alexnet', pretrained_cfg_overlay=dict(input_size=(3, 96, 96))).eval()
    return LoadedModel('small', model, 'sha', 'random init')


@pytest.mark.parametrize('spec, label, expected', [
    ('bilinear', 'bilinear', 'Bilinear()'),
    ('guided', 'guided r=1 eps=0.001', 'GuidedFilter(radius=1, eps=0.001)'),
    ('guided:radius=2,eps=1e-2', 'guided r=2 eps=0.01', 'GuidedFilter(radius=2, eps=0.01)'),
    ('guided:eps=0.1', 'guided r=1 eps=0.1', 'GuidedFilter(radius=1, eps=0.1)'),
])
def test_parse_upsample(spec, label, expected):
    from training.evaluate import parse_upsample
    got_label, upsampler = parse_upsample(spec)
    assert got_label == label and repr(upsampler) == expected


@pytest.mark.parametrize('spec, message', [
    ('nearest', '--upsample: expected one of'), ('bilinear:radius=1', '--upsample: expected one of'),
    ('guided:r=1', 'expected radius=R and/or eps=E'), ('guided:radius=', 'expected radius=R and/or eps=E'),
    ('guided:radius=one', 'expected a number for radius'), ('guided:radius=0', 'radius: expected an int >= 1'),
    ('guided:eps=-1', 'eps: expected a finite number > 0'),
])
def test_parse_upsample_errors(spec, message):
    from training.evaluate import parse_upsample
    with pytest.raises(InputError, match=message):
        parse_upsample(spec)


def test_full_resolution_colorization_rows_and_reference_values(photo_folder, small_model):
    import numpy as np
    from PIL import Image

    from training.evaluate import TEMPERATURES, full_resolution_colorization, full_resolution_markdown
    photos, shards = photo_folder
    results = full_resolution_colorization([small_model], photos, ['bilinear', 'guided:radius=2,eps=0.01'], shards)
    rows = [(r['model'], r['temperature'], r['upsample']) for r in results]
    assert rows == [('grey', None, None), ('mean_ab_train', None, None)] + [
        ('small', t, u) for t in TEMPERATURES for u in ('bilinear', 'guided r=2 eps=0.01')]
    first = results[0]
    assert first['images'] == 2 and first['greyscale_images_excluded'] == 1
    assert first['resolution'] == ['36x48', '56x40'] and first['input_size'] == 96
    # The train shard is one flat colour: its mean ab is that colour's (JPEG's YCbCr rounding moves it < 1).
    flat = rgb_to_lab(torch.tensor([200, 80, 60]).view(1, 3, 1, 1) / 255.0)[0, 1:, 0, 0]
    assert first['mean_ab_train'] == pytest.approx(flat.tolist(), abs=1)
    # grey: its AuC from the definition, every photo's pixels pooled (8-bit rounding of grey moves ab < 1).
    true_ab = torch.cat([rgb_to_lab(torch.from_numpy(np.array(Image.open(photos / name))).permute(2, 0, 1)[None]
                                    / 255.0)[:, 1:].flatten(2) for name in ('a.png', 'b.png')], dim=2)
    expected = (1 - true_ab.double().square().sum(1).sqrt().clamp(max=150) / 150).mean().item()
    assert first['auc'] == pytest.approx(expected, abs=0.005)
    assert first['chroma_pred'] < 1 and first['chroma_true'] == pytest.approx(
        true_ab.double().square().sum(1).sqrt().mean().item(), abs=0.01)
    # upsamplers give different rows; every value is a finite metric
    by_key = {(r['model'], r['temperature'], r['upsample']): r for r in results}
    assert by_key['small', 0.38, 'bilinear']['auc'] != by_key['small', 0.38, 'guided r=2 eps=0.01']['auc']
    assert all(0 < r['auc'] <= 1 and 0 < r['auc_rebalanced'] <= 1 and math.isfinite(r['psnr_db']) for r in results)
    table = full_resolution_markdown(results)
    assert '| small | 0.38 | guided r=2 eps=0.01 |' in table and '| grey | – | – |' in table


def test_colorization_command_on_a_photo_folder_writes_json_and_markdown(photo_folder, tmp_path):
    import json

    from splitbrain_hub.hub import save_pretrained
    from training.evaluate import main
    photos, shards = photo_folder
    torch.manual_seed(0)
    import timm
    save_pretrained(timm.create_model('splitbrain_alexnet', pretrained_cfg_overlay=dict(input_size=(3, 96, 96))),
                    tmp_path / 'model')
    out = tmp_path / 'results' / 'colorization_photos.json'
    assert main(['colorization', '--data', str(photos), '--train-data', str(shards), '--weights',
                 f'mine={tmp_path / "model"}', '--upsample', 'guided', '--amp', 'off', '--out', str(out)]) == 0
    results = json.loads(out.read_text())
    assert [r['model'] for r in results] == ['grey', 'mean_ab_train', 'mine', 'mine', 'mine']
    assert {r['upsample'] for r in results[2:]} == {'guided r=1 eps=0.001'}
    assert results[2]['network_precision'] == 'fp32'
    assert out.with_suffix('.md').read_text().startswith('# Colorization quality at full resolution: photos')
