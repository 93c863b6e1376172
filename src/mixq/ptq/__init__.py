"""Post-training weight rounding beyond round-to-nearest."""

from mixq.ptq.gptq import gptq_rows
from mixq.ptq.rounding import apply_error_feedback

__all__ = ["apply_error_feedback", "gptq_rows"]
