"""Whether a graph is being recorded: the one Python branch the tensor code takes on how it is run."""
import torch

__all__ = ['in_traced_graph']


def in_traced_graph(x: object = None) -> bool:
    """True while ``torch.compile``, ``torch.export``, ``torch.jit.trace`` or ``torch.fx`` records a graph (``x``
    an fx ``Proxy``). The callers then convert in one pass instead of chunks: a Python loop over chunks of
    a size the graph does not know would fix that size in it (a guard such as ``batch <= 16``)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or isinstance(x, torch.fx.Proxy)
