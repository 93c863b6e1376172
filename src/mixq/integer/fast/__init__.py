"""The fast integer engine: fused C++ kernels (AVX512-VNNI, AVX2 or scalar, chosen at run
time) for the integer model's layers, and :func:`lower`, which moves a reference
:class:`~mixq.integer.IntegerModel` onto them with bit-identical integers.

Importing this package compiles nothing; the kernels are built on first use
(:func:`~mixq.integer.fast.build.kernels`).
"""

from mixq.integer.fast.build import active_isa, kernels, set_isa, supported_isas
from mixq.integer.fast.layers import FusedConv
from mixq.integer.fast.lower import FastIntegerModel, lower

__all__ = [
    "FastIntegerModel",
    "FusedConv",
    "active_isa",
    "kernels",
    "lower",
    "set_isa",
    "supported_isas",
]
