import json
import math
import warnings

import numpy as np
import pytest
import torch

from splitbrain_hub.errors import InputError
from splitbrain_hub.ops.bins import (
    _AB_BINS_PATH,
    AB_GRID_SIZE,
    L_BIN_COUNT,
    ab_bin_centers,
    ab_bin_count,
    annealed_mean,
    annealed_mean_from_logits,
    annealed_mean_from_logits_unchecked,
    hard_encode,
    l_bin_centers,
    rebalance_weights,
    soft_encode,
    write_ab_bin_centers,
)
from splitbrain_hub.ops.color import rgb_to_lab


def in_gamut_ab(device, dtype=torch.float64, size=32) -> torch.Tensor:
    """ab of random sRGB colours, shape (2, 2, size, size)."""
    generator = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, size, size, generator=generator, dtype=torch.float64)
    return rgb_to_lab(rgb)[:, 1:].to(device=device, dtype=dtype)


def with_bad_count(count: float) -> torch.Tensor:
    """A histogram of 50 ones with ``count`` in one bin."""
    histogram = torch.ones(50)
    histogram[3] = count
    return histogram


def centers_as_image(centers: torch.Tensor) -> torch.Tensor:
    """(Q, C) centres -> a (1, C, Q, 1) image of them."""
    return centers.T[None, :, :, None]


class TestBinCenters:
    def test_ab(self, device):
        centers = ab_bin_centers(device=device, dtype=torch.float64)
        assert centers.shape == (ab_bin_count(), 2) == (261, 2)
        assert centers.device.type == device.type and centers.dtype == torch.float64
        assert torch.equal(centers, (centers / AB_GRID_SIZE).round() * AB_GRID_SIZE)
        assert [0.0, 0.0] in centers.tolist()
        assert centers.tolist() == sorted(centers.tolist())

    def test_generator_reproduces_shipped_file(self, tmp_path):
        # One sweep of all 256³ 8-bit colours (through color.rgb_to_lab_unchecked, itself checked against scikit-image
        # in test_color.py) rewrites the shipped file byte for byte.
        path = tmp_path / 'ab_bins.json'
        write_ab_bin_centers(path)
        assert path.read_bytes() == _AB_BINS_PATH.read_bytes()
        assert json.loads(path.read_text())['centers'] == ab_bin_centers(dtype=torch.int64).tolist()

    def test_l(self, device):
        centers = l_bin_centers(device=device, dtype=torch.float64)
        assert centers.shape == (L_BIN_COUNT, 1) == (50, 1)
        assert centers.device.type == device.type
        assert centers.flatten().tolist() == list(range(1, 100, 2))


class TestSoftEncode:
    @pytest.mark.parametrize('shape', [(1, 2, 1, 1), (4, 2, 3, 5)])
    def test_shapes(self, shape, device):
        values = torch.rand(shape, device=device) * 100 - 50
        encoded = soft_encode(values, ab_bin_centers())
        assert encoded.shape == (shape[0], 261, shape[2], shape[3])
        assert encoded.device.type == device.type and encoded.dtype == values.dtype
        torch.testing.assert_close(encoded.sum(dim=1), torch.ones_like(encoded[:, 0]))
        assert ((encoded > 0).sum(dim=1) == 5).all()

    def test_gaussian_weights(self):
        # L = 42: the nearest centres are 41 and 43 (d = 1), 39 and 45 (d = 3), then 37 or 47 (d = 5, a tie).
        encoded = soft_encode(torch.tensor([42.0], dtype=torch.float64).view(1, 1, 1, 1), l_bin_centers())
        weights = encoded.flatten()
        distances = torch.tensor([1.0, 1.0, 3.0, 3.0, 5.0], dtype=torch.float64)
        expected = torch.exp(-(distances**2) / (2 * 5.0**2))
        expected = expected / expected.sum()
        assert sorted(weights[weights > 0].tolist()) == pytest.approx(sorted(expected.tolist()))
        assert weights[20].item() == weights[21].item() == pytest.approx(expected[0].item())  # centres 41, 43

    def test_batched_equals_one_by_one(self):
        values = in_gamut_ab('cpu', size=4)
        encoded = soft_encode(values, ab_bin_centers())
        for index in range(values.shape[0]):
            alone = soft_encode(values[index : index + 1], ab_bin_centers())
            torch.testing.assert_close(encoded[index : index + 1], alone)

    def test_far_from_every_centre_stays_finite(self):
        encoded = soft_encode(torch.tensor([1e4, -1e4]).view(1, 2, 1, 1), ab_bin_centers())
        assert torch.isfinite(encoded).all()
        torch.testing.assert_close(encoded.sum(), torch.tensor(1.0))

    @pytest.mark.parametrize(
        ('kwargs', 'message'),
        [
            ({'values': torch.zeros(1, 3, 2, 2)}, r'values: expected shape \(N, 2, H, W\) .*, got \(1, 3, 2, 2\)'),
            ({'values': torch.zeros(2, 2, 2)}, r'values: expected shape \(N, 2, H, W\) .*, got \(2, 2, 2\)'),
            ({'values': torch.zeros(1, 2, 2, 2, dtype=torch.int64)}, 'values: expected a floating-point dtype, got'),
            ({'values': torch.full((1, 2, 2, 2), float('nan'))}, 'values: expected finite values, got NaN or infinity'),
            ({'values': np.zeros((1, 2, 2, 2))}, 'values: expected a torch.Tensor, got ndarray'),
            ({'centers': torch.zeros(261)}, r'centers: expected a floating-point \(Q, C\) tensor, got .* \(261,\)'),
            ({'neighbours': 0}, r'neighbours: expected an integer in \[1, 261\], got 0'),
            ({'neighbours': 262}, r'neighbours: expected an integer in \[1, 261\], got 262'),
            ({'sigma': 0.0}, 'sigma: expected a finite number > 0, got 0.0'),
        ],
    )
    def test_errors(self, kwargs, message):
        arguments = {'values': torch.zeros(1, 2, 2, 2), 'centers': ab_bin_centers(), **kwargs}
        with pytest.raises(InputError, match=message):
            soft_encode(**arguments)


class TestHardEncode:
    def test_nearest_bin(self, device):
        values = in_gamut_ab(device)
        centers = ab_bin_centers(device=device, dtype=torch.float64)
        index = hard_encode(values, centers)
        assert index.shape == (2, 32, 32) and index.dtype == torch.int64
        # In-gamut values fall into their own grid cell, so the nearest centre is the rounded value.
        torch.testing.assert_close(centers[index].permute(0, 3, 1, 2), (values / AB_GRID_SIZE).round() * AB_GRID_SIZE)

    def test_lightness(self):
        lightness = torch.tensor([0.0, 1.9, 2.1, 50.0, 100.0]).view(1, 1, 1, 5)
        assert hard_encode(lightness, l_bin_centers()).flatten().tolist() == [0, 0, 1, 24, 49]

    def test_errors(self):
        with pytest.raises(InputError, match=r'values: expected shape \(N, 1, H, W\)'):
            hard_encode(torch.zeros(1, 2, 3, 3), l_bin_centers())


class TestAnnealedMean:
    @pytest.mark.parametrize(
        ('make_centers', 'temperature', 'atol'),
        [(ab_bin_centers, 0.01, 1e-6), (ab_bin_centers, 0.05, 1e-6), (l_bin_centers, 0.01, 1e-2)],
    )
    def test_soft_round_trip_on_centres(self, make_centers, temperature, atol, device):
        # A value on a bin centre comes back once the distribution is sharpened. L's bins (width 2) are
        # narrow next to sigma = 5, so at T = 0.01 its neighbours still hold a trace of weight.
        centers = make_centers(device=device, dtype=torch.float64)
        values = centers_as_image(centers)
        decoded = annealed_mean(soft_encode(values, centers), centers, temperature)
        torch.testing.assert_close(decoded, values, rtol=0, atol=atol)

    def test_soft_round_trip_in_gamut(self, device):
        # Arbitrary values come back as their nearest centre at T -> 0: within half a grid step, exactly the
        # nearest centre wherever the value is clear of a cell boundary (near a boundary two centres tie).
        values = in_gamut_ab(device)
        centers = ab_bin_centers(device=device, dtype=torch.float64)
        decoded = annealed_mean(soft_encode(values, centers), centers, temperature=0.01)
        nearest = centers[hard_encode(values, centers)].permute(0, 3, 1, 2)
        assert (decoded - values).abs().max() <= AB_GRID_SIZE / 2
        offset = values / AB_GRID_SIZE - (values / AB_GRID_SIZE).round()
        clear = (offset.abs() < 0.4).all(dim=1, keepdim=True).expand_as(values)
        assert clear.float().mean() > 0.5
        torch.testing.assert_close(decoded[clear], nearest[clear], rtol=0, atol=1e-6)

    def test_hard_round_trip(self, device):
        # One-hot targets (zero probabilities everywhere else) decode to their centre at T -> 0.
        values = in_gamut_ab(device)
        centers = ab_bin_centers(device=device, dtype=torch.float64)
        index = hard_encode(values, centers)
        one_hot = torch.nn.functional.one_hot(index, len(centers)).permute(0, 3, 1, 2).double()
        decoded = annealed_mean(one_hot, centers, temperature=0.01)
        torch.testing.assert_close(decoded, centers[index].permute(0, 3, 1, 2))

    def test_lightness_round_trip(self):
        # Within half a bin (1) of the value, plus the trace of weight the neighbours keep at T = 0.01.
        lightness = torch.linspace(0, 100, 201, dtype=torch.float64).view(1, 1, 1, 201)
        centers = l_bin_centers(dtype=torch.float64)
        decoded = annealed_mean(soft_encode(lightness, centers), centers, temperature=0.01)
        assert (decoded - lightness).abs().max() <= 1.0 + 1e-2

    def test_temperature_one_is_the_mean(self, device):
        probabilities = torch.rand(2, 261, 3, 4, device=device, dtype=torch.float64)
        probabilities = probabilities / probabilities.sum(dim=1, keepdim=True)
        centers = ab_bin_centers(device=device, dtype=torch.float64)
        expected = torch.einsum('nqhw,qc->nchw', probabilities, centers)
        torch.testing.assert_close(annealed_mean(probabilities, centers, temperature=1.0), expected)

    @pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
    def test_zeros_and_low_temperature_stay_finite(self, dtype):
        probabilities = torch.zeros(1, 261, 2, 2, dtype=dtype)
        probabilities[0, 7, 0, 0] = 1.0  # other pixels are all zeros: they decode to the mean of the centres
        decoded = annealed_mean(probabilities, ab_bin_centers(), temperature=0.01)
        assert torch.isfinite(decoded).all()
        assert decoded[0, :, 0, 0].tolist() == ab_bin_centers()[7].tolist()

    def test_from_logits(self, device):
        logits = 10 * torch.randn(2, 50, 3, 4, device=device, dtype=torch.float64)
        centers = l_bin_centers(device=device, dtype=torch.float64)
        for temperature in (0.01, 0.38, 1.0):
            expected = annealed_mean(logits.softmax(dim=1), centers, temperature)
            torch.testing.assert_close(annealed_mean_from_logits(logits, centers, temperature), expected)

    def test_centers_follow_the_input(self):
        logits = torch.randn(1, 261, 2, 2, dtype=torch.float64)
        decoded = annealed_mean_from_logits(logits, ab_bin_centers(dtype=torch.float32))
        assert decoded.dtype == torch.float64

    def test_script(self):
        logits = torch.randn(2, 261, 3, 4)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)  # torch.jit.script is deprecated
            scripted = torch.jit.script(annealed_mean_from_logits_unchecked)
        expected = annealed_mean_from_logits(logits, ab_bin_centers(), 0.38)
        torch.testing.assert_close(scripted(logits, ab_bin_centers(), 0.38), expected)

    @pytest.mark.parametrize('temperature', [0, -1.0, math.nan, math.inf, '0.38', True])
    def test_temperature_errors(self, temperature):
        with pytest.raises(InputError, match='temperature: expected a finite number > 0, got'):
            annealed_mean(torch.ones(1, 50, 2, 2) / 50, l_bin_centers(), temperature)
        with pytest.raises(InputError, match='temperature: expected a finite number > 0, got'):
            annealed_mean_from_logits(torch.zeros(1, 50, 2, 2), l_bin_centers(), temperature)

    def test_shape_errors(self):
        message = r'probabilities: expected shape \(N, 50, H, W\) to match centers, got \(1, 49, 2, 2\)'
        with pytest.raises(InputError, match=message):
            annealed_mean(torch.ones(1, 49, 2, 2), l_bin_centers())
        with pytest.raises(InputError, match='logits: expected a floating-point dtype, got torch.int64'):
            annealed_mean_from_logits(torch.zeros(1, 50, 2, 2, dtype=torch.int64), l_bin_centers())


class TestRebalanceWeights:
    def test_uniform_histogram_gives_ones(self):
        for centers in (ab_bin_centers(dtype=torch.float64), l_bin_centers(dtype=torch.float64)):
            weights = rebalance_weights(torch.ones(len(centers), dtype=torch.float64), centers)
            torch.testing.assert_close(weights, torch.ones_like(weights))

    def test_matches_formula(self):
        # Reference in numpy: Gaussian-weighted average over the centres, mixed with uniform, inverted, E[w] = 1.
        centers = ab_bin_centers(dtype=torch.float64)
        histogram = torch.rand(len(centers), generator=torch.Generator().manual_seed(0), dtype=torch.float64) ** 4
        weights = rebalance_weights(histogram, centers, sigma=5.0, lam=0.5).numpy()

        c, p = centers.numpy(), histogram.numpy() / histogram.numpy().sum()
        kernel = np.exp(-((c[:, None, :] - c[None, :, :]) ** 2).sum(-1) / (2 * 5.0**2))
        smoothed = (kernel / kernel.sum(1, keepdims=True)) @ p
        smoothed /= smoothed.sum()
        expected = 1 / (0.5 * smoothed + 0.5 / len(c))
        expected /= (smoothed * expected).sum()
        np.testing.assert_allclose(weights, expected, rtol=1e-10)
        assert (smoothed * weights).sum() == pytest.approx(1.0)

    def test_rare_bins_weigh_more(self):
        centers = l_bin_centers(dtype=torch.float64)
        histogram = torch.full((50,), 100.0, dtype=torch.float64)
        histogram[:10] = 1.0  # the darkest bins are rare
        weights = rebalance_weights(histogram, centers)
        assert weights[:10].min() > 1 > weights[20:].max()

    def test_lam_one_gives_ones_and_integer_counts_are_accepted(self):
        centers = l_bin_centers()
        weights = rebalance_weights(torch.arange(50), centers, lam=1.0)
        torch.testing.assert_close(weights, torch.ones(50))

    def test_device(self, device):
        weights = rebalance_weights(torch.ones(50, device=device), l_bin_centers())
        assert weights.device.type == device.type

    @pytest.mark.parametrize(
        ('kwargs', 'message'),
        [
            ({'histogram': torch.ones(49)}, r'histogram: expected shape \(50,\) to match centers, got \(49,\)'),
            ({'histogram': torch.ones(1, 50)}, r'histogram: expected shape \(50,\) to match centers, got \(1, 50\)'),
            ({'histogram': [1.0] * 50}, 'histogram: expected a torch.Tensor, got list'),
            ({'histogram': torch.zeros(50)}, 'histogram: expected a positive total, got all zeros'),
            ({'histogram': with_bad_count(-1.0)}, 'histogram: expected finite non-negative counts, got'),
            ({'histogram': with_bad_count(math.nan)}, 'histogram: expected finite non-negative counts, got'),
            ({'histogram': with_bad_count(math.inf)}, 'histogram: expected finite non-negative counts, got'),
            ({'lam': 0.0}, r'lam: expected a number in \(0, 1\], got 0.0'),
            ({'lam': 1.5}, r'lam: expected a number in \(0, 1\], got 1.5'),
            ({'sigma': -5.0}, 'sigma: expected a finite number > 0, got -5.0'),
        ],
    )
    def test_errors(self, kwargs, message):
        arguments = {'histogram': torch.ones(50), 'centers': l_bin_centers(), **kwargs}
        with pytest.raises(InputError, match=message):
            rebalance_weights(**arguments)


def test_hard_encode_in_chunks_is_the_nearest_centre(monkeypatch):
    from splitbrain_hub.ops import bins
    centers = ab_bin_centers()
    ab = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 80  # many out of gamut
    nearest = (ab[:, None] - centers[None, :, :, None, None]).square().sum(2).argmin(1)
    monkeypatch.setattr(bins, 'ENCODE_PIXELS', 7)  # 128 pixels in 19 chunks, the last one short
    assert torch.equal(hard_encode(ab, centers), nearest)
