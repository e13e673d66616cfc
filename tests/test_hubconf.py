"""torch.hub: local load, and what torch.hub.list / torch.hub.help would show."""
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_hub_load_local():
    model = torch.hub.load(str(REPO), 'splitbrain_alexnet', source='local', pretrained=False, num_classes=3)
    assert model(torch.rand(1, 3, 128, 128)).shape == (1, 3)


def test_entry_points_and_docs_as_torch_hub_sees_them():
    # torch.hub.list and torch.hub.help reach GitHub; this is what they do once the repo is fetched.
    hubconf = torch.hub._import_module(torch.hub.MODULE_HUBCONF, str(REPO / 'hubconf.py'))
    torch.hub._check_dependencies(hubconf)
    entries = [f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith('_')]
    assert entries == ['splitbrain_alexnet']
    doc = getattr(hubconf, 'splitbrain_alexnet').__doc__
    assert 'Split-brain autoencoder' in doc and 'pretrained' in doc
