"""Integer-only inference: fused dyadic requantisation, exact evaluation, bit-exact engines."""

from mixq.integer.compile import FINE_BITS, IntegerModel, to_integer
from mixq.integer.dyadic import Dyadic, dyadic_multiply, rounding_shift
from mixq.integer.exact import ExactEvaluation, ExactModel, evaluate_exact, exact_model
from mixq.integer.supported import check_supported, unsupported_ops
from mixq.integer.weights import IntegerWeights, integer_weights

__all__ = [
    "FINE_BITS",
    "Dyadic",
    "ExactEvaluation",
    "ExactModel",
    "IntegerModel",
    "IntegerWeights",
    "check_supported",
    "dyadic_multiply",
    "evaluate_exact",
    "exact_model",
    "integer_weights",
    "rounding_shift",
    "to_integer",
    "unsupported_ops",
]
