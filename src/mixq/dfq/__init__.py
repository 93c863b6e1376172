"""DFQ: differentiable search of real-valued bit widths per row or per layer, rounded into a
plan that meets a size (or BOPs) target exactly.

    result = dfq_search(model, loader, DfqConfig(target_eq_bits=4.2, steps=300))
    qnet = mixq.quantize(model, "fixed8", plan=result.plan)
"""

from mixq.dfq.quantizer import FractionalBitsQuantizer
from mixq.dfq.rounding import round_bits
from mixq.dfq.search import DfqConfig, DfqResult, DfqStep, dfq_search

__all__ = [
    "DfqConfig",
    "DfqResult",
    "DfqStep",
    "FractionalBitsQuantizer",
    "dfq_search",
    "round_bits",
]
