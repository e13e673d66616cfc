"""Where pretrained weights come from: a folder, a file, the Hugging Face Hub, or the file shipped in the package.

A pretrained model's weights come from the first source the pretrained cfg names, in timm's order:

1. a ``save_pretrained`` folder: ``timm.create_model('local-dir:' + folder, pretrained=True)``;
2. a file: ``timm.create_model(..., pretrained_cfg_overlay=dict(file=path))``;
3. the Hugging Face Hub repo ``hf_hub_id`` (with ``hf_hub_filename``, default ``model.safetensors``),
   through huggingface_hub: its cache, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, timeouts, token and proxies;
4. without an ``hf_hub_id``: the file shipped in this package,
   ``splitbrain_hub/weights/<architecture>.<tag>.safetensors``.

The shipped file is also the one fallback: when the repo asked for is the release's own (the
registered ``hf_hub_id``) and the Hub cannot give it (offline, unreachable, not published), the
shipped file is loaded with a WARNING saying why. A miss on any other repo is a ``WeightsError``
naming the repo and what was tried. Only safetensors are read: a pickle never is.
"""
import logging
from pathlib import Path

from ..errors import WeightsError

_logger = logging.getLogger(__name__)

# The shipped file stays at splitbrain_hub/weights/ (its path is in git history and in the wheel).
SHIPPED_DIR = Path(__file__).parent.parent / 'weights'
WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
DEFAULT_ARCHITECTURE = 'splitbrain_alexnet'

__all__ = ['CONFIG_NAME', 'DEFAULT_ARCHITECTURE', 'SHIPPED_DIR', 'WEIGHTS_NAME', 'resolve_pretrained_cfg_file',
           'shipped_weights_path']


def shipped_weights_path(architecture: str, tag: str) -> Path:
    return SHIPPED_DIR / f'{architecture}.{tag}.safetensors'


def resolve_pretrained_cfg_file(variant: str, pretrained_cfg=None, pretrained_cfg_overlay=None,
                                cache_dir: str | Path | None = None):
    """Resolve the pretrained cfg of ``variant`` with ``file`` set to the ``.safetensors`` file to load.

    See the module docstring for the order of sources. ``cache_dir`` is timm's ``create_model``
    argument of that name (a Hugging Face cache folder; default ``HF_HUB_CACHE``).
    """
    from timm.models import resolve_pretrained_cfg
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay)
    if cfg.state_dict is not None:  # a state dict passed in: nothing to look up
        return cfg
    if cfg.source == 'local-dir':  # timm's 'local-dir:' prefix puts the folder in ``file``
        cfg.file = str(_local_dir_weights(cfg.file))
    elif cfg.file:
        cfg.file = str(_safetensors_file(cfg.file, 'pretrained_cfg file'))
    else:
        cfg.file = str(_hub_or_shipped(variant, cfg, cache_dir))
    # With a source named ('hf-hub', 'local-dir') timm would look the weights up again itself; without
    # one it loads ``file``, which is the file resolved here.
    cfg.source = None
    return cfg


def _safetensors_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if path.suffix != '.safetensors' or not path.is_file():
        raise WeightsError(f'{what}: expected an existing .safetensors file (pickled checkpoints are never '
                           f'loaded), got {str(path)!r}')
    return path


def _local_dir_weights(folder: str | Path) -> Path:
    if not Path(folder).is_dir():
        raise WeightsError(f'local-dir: expected a folder written by save_pretrained, got {str(folder)!r}')
    return _safetensors_file(Path(folder) / WEIGHTS_NAME, f'local-dir {str(folder)!r}')


def _hub_or_shipped(variant: str, cfg, cache_dir: str | Path | None) -> Path:
    """The Hub file of ``cfg``, or the shipped file where that is allowed (see the module docstring)."""
    shipped = shipped_weights_path(cfg.architecture, cfg.tag)
    if not cfg.hf_hub_id:
        if shipped.is_file():
            return shipped
        raise WeightsError(f'no pretrained weights for {variant!r}: looked in shipped file {shipped} (the cfg '
                           "names no hf_hub_id). Pass pretrained_cfg_overlay=dict(file='model.safetensors') "
                           'or pretrained=False.')
    from huggingface_hub.utils import validate_repo_id
    try:
        validate_repo_id(cfg.hf_hub_id.partition('@')[0])
    except ValueError as e:
        raise WeightsError(f"hf_hub_id: expected a Hub repo id 'owner/name' or 'owner/name@revision', "
                           f'got {cfg.hf_hub_id!r} ({e})') from None
    filename = cfg.hf_hub_filename or WEIGHTS_NAME
    if not filename.endswith('.safetensors'):
        raise WeightsError(f'hf_hub_filename: expected a .safetensors file (pickled checkpoints are never '
                           f'loaded), got {filename!r}')
    try:
        return _hub_weights(cfg.hf_hub_id, filename, cache_dir)
    except _HubMiss as miss:
        release = _release_hub_file(cfg)
        if (cfg.hf_hub_id, filename) != release:
            raise WeightsError(
                f'no pretrained weights for {variant!r} from Hugging Face Hub repo {cfg.hf_hub_id!r}: tried {miss}. '
                f'The weights shipped in the package stand in only for the release repo {release[0]!r}.') from None
        if not shipped.is_file():
            raise WeightsError(f'no pretrained weights for {variant!r}: looked in Hugging Face Hub repo '
                               f'{cfg.hf_hub_id!r} ({miss}); shipped file {shipped}. Pass pretrained_cfg_overlay='
                               "dict(file='model.safetensors') or pretrained=False.") from None
        _logger.warning('Hugging Face Hub repo %r not available (%s); using the weights shipped in the package: %s',
                        cfg.hf_hub_id, miss, shipped)
        return shipped


def _release_hub_file(cfg) -> tuple[str | None, str]:
    """The Hub repo and file registered with timm for ``cfg``'s architecture and tag: the release's own."""
    from timm.models import get_pretrained_cfg
    try:
        registered = get_pretrained_cfg(f'{cfg.architecture}.{cfg.tag}')
    except RuntimeError:  # a tag timm does not know (e.g. from a converted folder): no release of ours
        registered = None
    if registered is None:
        return None, WEIGHTS_NAME
    return registered.hf_hub_id, registered.hf_hub_filename or WEIGHTS_NAME


class _HubMiss(Exception):
    """The Hub file could not be had; the message says where it was looked for and why it failed."""


def _hub_weights(repo_id: str, filename: str, cache_dir: str | Path | None) -> Path:
    """``filename`` of Hub repo ``repo_id`` (``owner/name``, or timm's ``owner/name@revision``).

    Everything is huggingface_hub's: ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, the cache (``HF_HOME``,
    ``HF_HUB_CACHE`` or ``cache_dir``), ``HF_TOKEN``, ``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``
    and the proxy variables. Raises ``_HubMiss`` when the file is neither on the Hub nor in the cache.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    repo, _, revision = repo_id.partition('@')
    revision = revision or None
    # One HEAD request first, without retries, bounded by HF_HUB_ETAG_TIMEOUT. hf_hub_download makes the
    # same request, but when it fails and nothing is cached it tries again, five times with backoff and a
    # 60 s timeout each: 23 s measured with the connection refused, minutes when nothing answers.
    hub_error: Exception | None = None
    try:
        get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as e:  # requests, httpx or httpx2 errors depending on the huggingface_hub version
        hub_error = e
    try:
        # After a failed HEAD only the cache is read, as huggingface_hub does itself when offline.
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=hub_error is not None))
    except Exception as e:  # any failure here means "not available"; the reason goes into the message
        if hub_error is not None:
            reason = f'{_one_line(hub_error)}; not in the HF cache {cache_dir or constants.HF_HUB_CACHE}'
        else:
            reason = _one_line(e)
        raise _HubMiss(f'{filename!r} from {constants.ENDPOINT}: {reason}') from e


def _one_line(error: BaseException) -> str:
    text = ' '.join(str(error).split())
    return f'{type(error).__name__}: {text[:300]}' if text else type(error).__name__
