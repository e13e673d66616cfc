"""SplitBrainAlexNet: shapes, the split, parameter count, timm API, config round trip."""
import json
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn as nn

import splitbrain_hub  # noqa: F401  (registers the models)
from splitbrain_hub import InputError, SplitBrainAlexNet
from splitbrain_hub.models.splitbrain_alexnet import ALEXNET_LAYERS, GemmConv2d
from splitbrain_hub.ops.bins import L_BIN_COUNT, ab_bin_count


def _conv_params(out_chs, in_chs, kernel):
    return out_chs * in_chs * kernel * kernel + out_chs


def _half_params(in_chs):
    # The paper's widths halved: conv1..conv5 = 48, 128, 192, 192, 128; fc6, fc7 = 2048.
    return (_conv_params(48, in_chs, 11) + _conv_params(128, 48, 5) + _conv_params(192, 128, 3)
            + _conv_params(192, 192, 3) + _conv_params(128, 192, 3)
            + _conv_params(2048, 128, 6) + _conv_params(2048, 2048, 1))


def test_parameter_count_is_analytic():
    model = timm.create_model('splitbrain_alexnet')
    pretext = _conv_params(ab_bin_count(), 2048, 1) + _conv_params(L_BIN_COUNT, 2048, 1)
    expected = _half_params(1) + _half_params(2) + pretext
    assert sum(p.numel() for p in model.parameters()) == expected
    classifier = timm.create_model('splitbrain_alexnet', num_classes=10)
    assert sum(p.numel() for p in classifier.parameters()) == _half_params(1) + _half_params(2) + 4096 * 10 + 10


@pytest.mark.parametrize('size, grid', [(227, 13), (128, 6), (96, 4)])
def test_shapes(size, grid):
    model = timm.create_model('splitbrain_alexnet').eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 256, grid, grid)
        assert model(x).shape == (2, 4096)
        outputs = model.forward_pretext(x)
    assert outputs['l_half'].shape == (2, ab_bin_count(), grid, grid)
    assert outputs['ab_half'].shape == (2, L_BIN_COUNT, grid, grid)


def test_features_only():
    model = timm.create_model('splitbrain_alexnet', features_only=True).eval()
    assert model.feature_info.channels() == [96, 256, 384, 384, 256]
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, 227, 227))
    assert [tuple(o.shape[1:]) for o in outputs] == [(96, 55, 55), (256, 27, 27), (384, 13, 13), (384, 13, 13),
                                                      (256, 13, 13)]
    assert all(o.min() >= 0 for o in outputs), 'taps are after ReLU'


class _PassLab(nn.Identity):
    def normalize(self, lab):
        return lab


@pytest.mark.parametrize('perturbed, unaffected', [('ab', 'l_half'), ('l', 'ab_half')])
def test_halves_are_disjoint(perturbed, unaffected):
    """Changing one half's input channels moves none of the other half's features, at any layer."""
    torch.manual_seed(0)
    model = timm.create_model('splitbrain_alexnet').eval()
    model.data_lab = _PassLab()  # feed normalised Lab directly, so each channel can be changed alone
    lab = torch.randn(2, 3, 128, 128)
    other = lab.clone()
    if perturbed == 'ab':
        other[:, 1:] = torch.randn_like(other[:, 1:])
    else:
        other[:, :1] = torch.randn_like(other[:, :1])
    index = list(model.halves).index(unaffected)
    with torch.no_grad():
        final_a, taps_a = model.forward_intermediates(lab)
        final_b, taps_b = model.forward_intermediates(other)
        pretext_a, pretext_b = model.forward_pretext(lab, is_lab=True), model.forward_pretext(other, is_lab=True)
    for tap_a, tap_b in zip(taps_a + [final_a], taps_b + [final_b]):
        width = tap_a.shape[1] // 2
        mine = slice(index * width, (index + 1) * width)
        theirs = slice((1 - index) * width, (2 - index) * width)
        torch.testing.assert_close(tap_a[:, mine], tap_b[:, mine], rtol=0, atol=0)
        assert not torch.allclose(tap_a[:, theirs], tap_b[:, theirs]), 'the perturbed half should move'
    torch.testing.assert_close(pretext_a[unaffected], pretext_b[unaffected], rtol=0, atol=0)


def test_forward_intermediates_stop_early_ends_at_the_last_tap():
    model = timm.create_model('splitbrain_alexnet').eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        final, (conv2,) = model.forward_intermediates(x, indices=[1], stop_early=True)
        whole, (conv2_again,) = model.forward_intermediates(x, indices=[1])
    torch.testing.assert_close(final, conv2, rtol=0, atol=0)  # nothing ran past conv2
    torch.testing.assert_close(conv2, conv2_again, rtol=0, atol=0)
    assert whole.shape == model.forward_features(x).shape != final.shape


def test_greyscale_input():
    model = timm.create_model('splitbrain_alexnet', in_chans=1).eval()
    rgb_model = timm.create_model('splitbrain_alexnet').eval()
    rgb_model.load_state_dict(model.state_dict())
    grey = torch.rand(1, 1, 128, 128)
    with torch.no_grad():
        from_grey = model.forward_pretext(grey)['l_half']
        from_rgb = rgb_model.forward_pretext(grey.expand(-1, 3, -1, -1))['l_half']
    torch.testing.assert_close(from_grey, from_rgb, rtol=1e-4, atol=1e-4)


def test_classifier_api():
    model = timm.create_model('splitbrain_alexnet', num_classes=7)
    assert not model.pretext, 'a classifier for fine-tuning carries no pretext heads'
    x = torch.rand(2, 3, 128, 128)
    assert model(x).shape == (2, 7)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 4096)
    model.reset_classifier(0)
    assert model(x).shape == (2, 4096)
    model.reset_classifier(0, '')
    assert model(x).shape == (2, 4096, 6, 6)
    model.reset_classifier(3, 'avg')
    assert model(x).shape == (2, 3)


def test_every_parameter_gets_a_gradient_when_classifying():
    model = timm.create_model('splitbrain_alexnet', num_classes=42).train()
    model(torch.rand(2, 3, 128, 128)).mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_unsplit_variant():
    model = timm.create_model('alexnet_lab', pretext={'lab': 'lab_reg'})
    assert list(model.halves) == ['lab']
    assert model.features.branches['lab'].conv1.weight.shape == (96, 3, 11, 11)
    assert model.forward_pretext(torch.rand(1, 3, 128, 128))['lab'].shape == (1, 3, 6, 6)


def test_torchscript():
    model = timm.create_model('splitbrain_alexnet', num_classes=5).eval()
    x = torch.rand(1, 3, 128, 128)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x))


def test_config_round_trips_through_json():
    model = timm.create_model('splitbrain_alexnet', pool5_stride=2, drop_rate=0.1)
    config = json.loads(json.dumps(model.config()))
    assert SplitBrainAlexNet(**config).config() == model.config()


def test_layer_table_is_an_argument_recorded_in_the_config():
    narrow = {'convs': [[name, chs // 8, *rest] for name, chs, *rest in ALEXNET_LAYERS['convs']],
              'fcs': [[name, chs // 64, *rest] for name, chs, *rest in ALEXNET_LAYERS['fcs']]}
    model = timm.create_model('splitbrain_alexnet', layers=narrow)
    assert [(info['num_chs'], info['reduction']) for info in model.feature_info] == [
        (12, 4), (32, 8), (48, 16), (48, 16), (32, 16)]
    assert model.features.branches['l_half'].conv1.weight.shape == (6, 1, 11, 11)
    assert model.pre_logits.branches['ab_half'].fc6.weight.shape == (32, 16, 6, 6)
    config = json.loads(json.dumps(model.config()))
    assert config['layers'] == narrow
    rebuilt = SplitBrainAlexNet(**config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert timm.create_model('splitbrain_alexnet').config()['layers'] == ALEXNET_LAYERS


@pytest.mark.parametrize('kwargs, message', [
    (dict(halves={'l_half': [0, 2]}), 'consecutive'),
    (dict(halves={'x': [3]}), '0..2'),
    (dict(pretext={'nope': 'ab_cl'}), 'pretext'),
    (dict(pretext={'l_half': 'rgb_cl'}), 'pretext'),
    (dict(pool5_stride=3), 'pool5_stride'),
    (dict(in_chans=2), 'in_chans'),
    (dict(layers={'convs': ALEXNET_LAYERS['convs']}), 'layers: expected'),
    (dict(layers={'convs': [['conv1', 96, 11]], 'fcs': ALEXNET_LAYERS['fcs']}), 'layers: expected'),
    (dict(layers={'convs': [['conv1', 95, 11, 4, 0, 'pool1']], 'fcs': ALEXNET_LAYERS['fcs']}), 'equal halves'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        SplitBrainAlexNet(**kwargs)


def test_release_pooling_geometry():
    model = timm.create_model('splitbrain_alexnet', pool5_stride=2).eval()
    with torch.no_grad():
        assert model.forward_features(torch.rand(1, 3, 227, 227)).shape == (1, 256, 6, 6)


@pytest.mark.parametrize('half', ['l_half', 'ab_half'])
def test_running_one_half_equals_running_both(half):
    model = timm.create_model('splitbrain_alexnet').eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        alone = model.forward_pretext(x, halves=[half])
        torch.testing.assert_close(alone[half], model.forward_pretext(x)[half])
    assert list(alone) == [half]
    with pytest.raises(InputError, match='halves'):
        model.forward_pretext(x, halves=['nope'])


# In a child process: on torch 2.14.1 with AVX-512 BF16, oneDNN's bf16 weight gradient of a 1x1 convolution
# from 4096 channels to 1-3 corrupted the heap (abort or segfault within a few steps), which killed the
# regression rows of Table 2; the heads now run as one GEMM (GemmConv2d).
_REGRESSION_BF16_STEPS = """
import torch, timm, splitbrain_hub
torch.manual_seed(0)
model = timm.create_model('alexnet_lab', halves={'l': [0]}, pretext={'l': 'ab_reg'}, num_classes=0)
head = model.pretext['l']
fc7 = torch.randn(64, head.in_channels, 6, 6).relu()  # what fc7 hands the head: batch 64 at 128 px
for _ in range(20):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = head(fc7)
    out.float().square().mean().backward()
print(float(head.weight.grad.norm()), float(head.bias.grad.norm()))
"""


def test_regression_head_bf16_backward():
    completed = subprocess.run([sys.executable, '-c', _REGRESSION_BF16_STEPS], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    weight_norm, bias_norm = map(float, completed.stdout.split())
    assert weight_norm > 0 and bias_norm > 0


@pytest.mark.parametrize('kernel, dilation, padding', [(1, 1, 0), (3, 2, 2), (6, 2, 0)])
def test_gemm_conv_matches_conv2d(kernel, dilation, padding):
    torch.manual_seed(0)
    gemm = GemmConv2d(16, 5, kernel, dilation=dilation, padding=padding)
    conv = nn.Conv2d(16, 5, kernel, dilation=dilation, padding=padding)
    conv.load_state_dict(gemm.state_dict())
    x = torch.randn(2, 16, 13, 11, dtype=torch.float64, requires_grad=True)
    gemm, conv = gemm.double(), conv.double()
    torch.testing.assert_close(gemm(x), conv(x))
    assert torch.autograd.gradcheck(gemm, (x[:1].detach().requires_grad_(),))
