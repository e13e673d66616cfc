"""torch.hub entry points: ``torch.hub.load('<owner>/splitbrain_hub', 'splitbrain_alexnet')``.

Every public callable here is an entry point; its docstring is what ``torch.hub.help`` prints.
"""
# Modules that `import splitbrain_hub` loads from the distributions setup.cfg requires (import names,
# which torch.hub checks before loading; tests/test_packaging.py keeps this list complete).
dependencies = ['torch', 'torchvision', 'timm', 'safetensors', 'huggingface_hub', 'numpy', 'PIL', 'tqdm']


def splitbrain_alexnet(pretrained: bool = True, **kwargs):
    """Split-brain autoencoder AlexNet (Zhang, Isola, Efros, CVPR 2017), trained on Tiny ImageNet.

    Two disjoint halves: the L half predicts ab (colorization), the ab half predicts L. Takes RGB in
    [0, 1] (N, 3, H, W); features of conv1..conv5 via ``features_only=True`` or
    ``forward_intermediates``; per-half predictions via ``forward_pretext``.

    Args:
        pretrained: load the released weights: the release's Hugging Face Hub repo, or the copy
            shipped in the package when the Hub cannot give it (offline too).
        **kwargs: passed to ``timm.create_model`` (e.g. ``num_classes=10`` for fine-tuning,
            ``features_only=True``, ``pretrained_cfg_overlay=dict(file='model.safetensors')``).
    """
    import timm

    from splitbrain_hub.hub import DEFAULT_ARCHITECTURE  # importing the package registers the model with timm
    return timm.create_model(DEFAULT_ARCHITECTURE, pretrained=pretrained, **kwargs)
