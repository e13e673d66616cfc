"""Deprecated alias of ``splitbrain_hub.ops.upsample``, where this module now lives."""
from .deprecation import alias_module

alias_module(__name__, 'splitbrain_hub.ops.upsample', globals())
