"""Old import paths of modules that moved into subpackages: each old module is an alias that warns once.

``splitbrain_hub/color.py`` is now three lines calling ``alias_module``; its names are those of
``splitbrain_hub.ops.color``. Setting an attribute on an alias (e.g. a test's monkeypatch) does not reach the
module it stands for: patch the new module.
"""
import importlib
import warnings
from typing import Any

__all__ = ['alias_module']


def alias_module(old: str, new: str, namespace: dict[str, Any]) -> None:
    """Copy the public names of module ``new`` into ``namespace`` (the globals of module ``old``) and warn."""
    module = importlib.import_module(new)
    public = {name: value for name, value in vars(module).items() if not name.startswith('_')}
    namespace.update(public, __all__=list(getattr(module, '__all__', public)))
    warnings.warn(f'{old} has moved to {new}; import it from there (the old path will be removed in a later '
                  'release)', DeprecationWarning, stacklevel=3)
