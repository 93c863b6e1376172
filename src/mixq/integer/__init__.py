"""Integer-only inference: dyadic requantisation, shift-add PoT/SP2 rows, bit-exact checks."""

from mixq.integer.compile import FINE_BITS, IntegerModel, to_integer
from mixq.integer.dyadic import Dyadic, dyadic_multiply, rounding_shift
from mixq.integer.weights import IntegerWeights, integer_weights

__all__ = [
    "FINE_BITS",
    "Dyadic",
    "IntegerModel",
    "IntegerWeights",
    "dyadic_multiply",
    "integer_weights",
    "rounding_shift",
    "to_integer",
]
