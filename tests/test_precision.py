"""Mixed precision: the amp setting, and one bf16 training step's gradients against fp32's."""
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

import splitbrain_hub  # noqa: F401  (registers the models)
from splitbrain_hub.errors import InputError
from splitbrain_hub.ops.bins import ab_bin_count
from splitbrain_hub.ops.color import rgb_to_lab
from splitbrain_hub.ops.precision import AMP_SETTINGS, autocast, autocast_dtype, native_bf16, precision_name
from training.objectives import Objective, get_objective

COFFEE = Path(splitbrain_hub.__file__).parent / 'assets' / 'coffee.jpg'


def test_amp_settings(device):
    assert autocast_dtype('off', device) is None
    assert autocast_dtype('bf16', device) is torch.bfloat16
    assert autocast_dtype('auto', device) is (torch.bfloat16 if native_bf16(device) else None)
    assert [precision_name(autocast_dtype(a, device)) for a in ('off', 'bf16')] == ['fp32', 'bf16']


@pytest.mark.parametrize('amp', ['fp16', 'on', '', 'BF16'])
def test_amp_rejects_unknown_settings(amp):
    with pytest.raises(InputError, match=f'amp: expected one of {AMP_SETTINGS!r}'.replace('(', r'\(')
                       .replace(')', r'\)')):
        autocast_dtype(amp, torch.device('cpu'))


def test_autocast_none_is_fp32_even_inside_an_outer_autocast(device):
    a = torch.randn(8, 8, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        with autocast(device, None):
            assert (a @ a).dtype == torch.float32
        with autocast(device, torch.bfloat16):
            assert (a @ a).dtype == torch.bfloat16


def photo_crops(n: int, size: int) -> torch.Tensor:
    """``n`` random crops of the photo the package ships, RGB in [0, 1] at ``size``: real image statistics."""
    photo = torch.from_numpy(np.asarray(Image.open(COFFEE).convert('RGB')).copy()).permute(2, 0, 1).float() / 255
    generator = torch.Generator().manual_seed(0)
    crops = []
    for _ in range(n):
        side = int(torch.randint(size, min(photo.shape[1:]) + 1, (1,), generator=generator))
        top = int(torch.randint(0, photo.shape[1] - side + 1, (1,), generator=generator))
        left = int(torch.randint(0, photo.shape[2] - side + 1, (1,), generator=generator))
        crops.append(F.interpolate(photo[None, :, top:top + side, left:left + side], size=size, mode='bilinear',
                                   antialias=True, align_corners=False))
    return torch.cat(crops).clamp(0, 1)


@pytest.mark.parametrize('pretrained', [False, True], ids=['init', 'shipped'])
@pytest.mark.parametrize('name', ['split_brain_cl', 'split_brain_reg'])
def test_bf16_step_gradients_agree_with_fp32(name, pretrained, device):
    """The release network (full widths) on a batch of photo crops, one step, at initialisation and from the
    shipped weights: every parameter tensor's bf16 gradient points the way fp32's does (cosine similarity
    >= 0.99), and the losses, computed in fp32 under autocast, agree within 1 %."""
    torch.manual_seed(0)
    spec = get_objective(name)
    model = timm.create_model(spec.architecture, **spec.model_kwargs()).to(device)
    if pretrained:  # the encoder from the shipped weights; the reg heads (not shipped) stay at their init
        shipped = timm.create_model('splitbrain_alexnet', pretrained=True).state_dict()
        model.load_state_dict({k: v for k, v in shipped.items() if 'pretext' not in k}, strict=False)
    prior = torch.rand(ab_bin_count(), generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
    objective = Objective(model, spec, ab_prior=prior).to(device)
    lab = rgb_to_lab(photo_crops(16, 128)).to(device)
    labels, colour = torch.zeros(16, dtype=torch.long, device=device), torch.ones(16, dtype=torch.bool, device=device)
    gradients, losses = {}, {}
    for dtype in (None, torch.bfloat16):
        model.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss, per_term = objective(lab, labels, colour)
        assert all(value.dtype == torch.float32 for value in per_term.values())
        loss.backward()
        gradients[dtype] = {n: p.grad.detach().flatten().double() for n, p in model.named_parameters()}
        losses[dtype] = loss.item()
    assert abs(losses[torch.bfloat16] - losses[None]) <= 0.01 * abs(losses[None])
    cosine = {n: F.cosine_similarity(g, gradients[torch.bfloat16][n], dim=0).item()
              for n, g in gradients[None].items()}
    assert len(cosine) == len(list(model.parameters()))
    worst = min(cosine, key=cosine.get)
    assert cosine[worst] >= 0.99, f'{worst}: cosine {cosine[worst]:.4f}'
