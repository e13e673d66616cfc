"""Deprecated alias of ``splitbrain_hub.deploy.export``, where this module now lives."""
from .deprecation import alias_module

alias_module(__name__, 'splitbrain_hub.deploy.export', globals())
