"""mixq: row-wise mixed-scheme, multi-precision quantisation for PyTorch.

>>> import torch, mixq
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(),
...                           torch.nn.Linear(16 * 6 * 6, 10))
>>> qnet = mixq.quantize(net, "rmsmp", calibration_data=[torch.randn(8, 3, 8, 8)],
...                      progress=False)
>>> qnet(torch.randn(2, 3, 8, 8)).shape
torch.Size([2, 10])
"""

from mixq.allocation.rows import RowStats, assign_rows
from mixq.assignment import RowAssignment
from mixq.calibrate import calibrate
from mixq.checkpoint import load_quantized, save_quantized
from mixq.convert import quantizable_layer_names, quantize
from mixq.errors import (
    CalibrationError,
    CheckpointError,
    DataError,
    IntegerConversionError,
    MixqError,
    NonFiniteWeightError,
    NoQuantizableLayerError,
    PackedFormatError,
    RatioError,
    RecipeError,
    SchemeError,
    UnsupportedLayerError,
    UnusedRuleWarning,
)
from mixq.integer import IntegerModel, to_integer
from mixq.nn.act_quant import ActQuantizer
from mixq.nn.layers import QuantConv2d, QuantLinear
from mixq.nn.weight_quant import RowWeightQuantizer
from mixq.ratio import Ratio
from mixq.recipe import LayerConfig, Recipe, Rule
from mixq.schemes import Candidate, Scheme
from mixq.summary import ModelSummary, describe
from mixq.toggle import set_quantization

__version__ = "0.1.0"

__all__ = [
    "ActQuantizer",
    "CalibrationError",
    "Candidate",
    "CheckpointError",
    "DataError",
    "IntegerConversionError",
    "IntegerModel",
    "LayerConfig",
    "MixqError",
    "ModelSummary",
    "NoQuantizableLayerError",
    "NonFiniteWeightError",
    "PackedFormatError",
    "QuantConv2d",
    "QuantLinear",
    "Ratio",
    "RatioError",
    "Recipe",
    "RecipeError",
    "RowAssignment",
    "RowStats",
    "RowWeightQuantizer",
    "Rule",
    "Scheme",
    "SchemeError",
    "UnsupportedLayerError",
    "UnusedRuleWarning",
    "assign_rows",
    "calibrate",
    "describe",
    "load_quantized",
    "quantizable_layer_names",
    "quantize",
    "save_quantized",
    "set_quantization",
    "to_integer",
]
