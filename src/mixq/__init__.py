"""mixq: row-wise mixed-scheme, multi-precision quantisation for PyTorch.

>>> import torch, mixq
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(),
...                           torch.nn.Linear(16 * 6 * 6, 10))
>>> qnet = mixq.quantize(net, "rmsmp", calibration_data=[torch.randn(8, 3, 8, 8)],
...                      progress=False)
>>> qnet(torch.randn(2, 3, 8, 8)).shape
torch.Size([2, 10])

Every public name is importable from here; each is loaded on first use (PEP 562), so
``import mixq`` imports neither torch nor scipy and ``mixq.RecipeError`` costs nothing.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it. One table: __getattr__, __all__ and dir() read it.
_EXPORTS: dict[str, str] = {
    # quantising, calibrating, saving
    "quantize": "mixq.convert",
    "quantizable_layer_names": "mixq.swap",
    "calibrate": "mixq.calibrate",
    "save_quantized": "mixq.checkpoint",
    "load_quantized": "mixq.checkpoint",
    "describe": "mixq.summary",
    "ModelSummary": "mixq.summary",
    "LayerSummary": "mixq.summary",
    "set_quantization": "mixq.toggle",
    "register_layer_mapping": "mixq.mappings",
    # recipes, ratios, schemes, plans
    "Recipe": "mixq.recipe",
    "Rule": "mixq.recipe",
    "LayerConfig": "mixq.recipe",
    "register_row_scorer": "mixq.scoring",
    "Ratio": "mixq.ratio",
    "Scheme": "mixq.schemes",
    "Candidate": "mixq.schemes",
    "RowAssignment": "mixq.assignment",
    "Plan": "mixq.plan",
    "LayerPlan": "mixq.plan",
    "LayerShape": "mixq.plan",
    "measure_layer_shapes": "mixq.shapes",
    # layers and quantisers
    "ActQuantizer": "mixq.nn.act_quant",
    "QuantConv2d": "mixq.nn.layers",
    "QuantLinear": "mixq.nn.layers",
    "RowWeightQuantizer": "mixq.nn.weight_quant",
    # Hessian sensitivity
    "HutchinsonConfig": "mixq.sensitivity",
    "hutchinson_traces": "mixq.sensitivity",
    "SensitivityTable": "mixq.sensitivity",
    "HessianRowScorer": "mixq.sensitivity",
    "hessian_rmsmp_plan": "mixq.sensitivity",
    "perturbation_table": "mixq.sensitivity",
    # allocation: rows, the ILP, DFQ
    "RowStats": "mixq.allocation.rows",
    "assign_rows": "mixq.allocation.rows",
    "Budget": "mixq.allocation.budget",
    "PerturbationTable": "mixq.allocation.options",
    "solve_ilp": "mixq.allocation.ilp",
    "DfqConfig": "mixq.dfq",
    "DfqResult": "mixq.dfq",
    "dfq_search": "mixq.dfq",
    # training
    "TrainConfig": "mixq.train",
    "TrainResult": "mixq.train",
    # integer engine and export
    "IntegerModel": "mixq.integer",
    "to_integer": "mixq.integer",
    "export_onnx": "mixq.export.onnx_integer",
    "export_qonnx": "mixq.export.qonnx",
    "save_packed": "mixq.export.packed",
    "load_packed": "mixq.export.packed",
    # errors and warnings (mixq.errors is torch-free)
    "MixqError": "mixq.errors",
    "SchemeError": "mixq.errors",
    "RatioError": "mixq.errors",
    "RecipeError": "mixq.errors",
    "UnsupportedLayerError": "mixq.errors",
    "NoQuantizableLayerError": "mixq.errors",
    "NonFiniteWeightError": "mixq.errors",
    "CalibrationError": "mixq.errors",
    "CheckpointError": "mixq.errors",
    "DataError": "mixq.errors",
    "SensitivityError": "mixq.errors",
    "AllocationError": "mixq.errors",
    "InfeasibleBudgetError": "mixq.errors",
    "DeviceError": "mixq.errors",
    "DistributedSetupError": "mixq.errors",
    "HardwareCostError": "mixq.errors",
    "IntegerConversionError": "mixq.errors",
    "PackedFormatError": "mixq.errors",
    "TrainConfigError": "mixq.errors",
    "TrainingDivergedError": "mixq.errors",
    "UnusedRuleWarning": "mixq.errors",
    "FloatLayerWarning": "mixq.errors",
    "UnfoldedBatchNormWarning": "mixq.errors",
    "CalibrationDataWarning": "mixq.errors",
    "UncheckedCheckpointWarning": "mixq.errors",
    "OutputError": "mixq.errors",
    "FastEngineUnavailableError": "mixq.errors",
}

# Spelled out for linters and IDEs; a test keeps it equal to the keys of _EXPORTS.
__all__ = [
    "ActQuantizer",
    "AllocationError",
    "Budget",
    "CalibrationDataWarning",
    "CalibrationError",
    "Candidate",
    "CheckpointError",
    "DataError",
    "DeviceError",
    "DfqConfig",
    "DfqResult",
    "DistributedSetupError",
    "FastEngineUnavailableError",
    "FloatLayerWarning",
    "HardwareCostError",
    "HessianRowScorer",
    "HutchinsonConfig",
    "InfeasibleBudgetError",
    "IntegerConversionError",
    "IntegerModel",
    "LayerConfig",
    "LayerPlan",
    "LayerShape",
    "LayerSummary",
    "MixqError",
    "ModelSummary",
    "NoQuantizableLayerError",
    "NonFiniteWeightError",
    "OutputError",
    "PackedFormatError",
    "PerturbationTable",
    "Plan",
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
    "SensitivityError",
    "SensitivityTable",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "TrainingDivergedError",
    "UncheckedCheckpointWarning",
    "UnfoldedBatchNormWarning",
    "UnsupportedLayerError",
    "UnusedRuleWarning",
    "assign_rows",
    "calibrate",
    "describe",
    "dfq_search",
    "export_onnx",
    "export_qonnx",
    "hessian_rmsmp_plan",
    "hutchinson_traces",
    "load_packed",
    "load_quantized",
    "measure_layer_shapes",
    "perturbation_table",
    "quantizable_layer_names",
    "quantize",
    "register_layer_mapping",
    "register_row_scorer",
    "save_packed",
    "save_quantized",
    "set_quantization",
    "solve_ilp",
    "to_integer",
]


# Names that are both a function and a submodule (mixq.calibrate): importing the submodule
# must not replace the function that ``mixq.calibrate`` has always meant.
_SHADOWED = frozenset({"calibrate"})


class _MixqModule(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _MixqModule


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mixq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and IDEs see; nothing here runs
    from mixq.allocation.budget import Budget
    from mixq.allocation.ilp import solve_ilp
    from mixq.allocation.options import PerturbationTable
    from mixq.allocation.rows import RowStats, assign_rows
    from mixq.assignment import RowAssignment
    from mixq.calibrate import calibrate
    from mixq.checkpoint import load_quantized, save_quantized
    from mixq.convert import quantize
    from mixq.dfq import DfqConfig, DfqResult, dfq_search
    from mixq.errors import (
        AllocationError,
        CalibrationDataWarning,
        CalibrationError,
        CheckpointError,
        DataError,
        DeviceError,
        DistributedSetupError,
        FastEngineUnavailableError,
        FloatLayerWarning,
        HardwareCostError,
        InfeasibleBudgetError,
        IntegerConversionError,
        MixqError,
        NonFiniteWeightError,
        NoQuantizableLayerError,
        OutputError,
        PackedFormatError,
        RatioError,
        RecipeError,
        SchemeError,
        SensitivityError,
        TrainConfigError,
        TrainingDivergedError,
        UncheckedCheckpointWarning,
        UnfoldedBatchNormWarning,
        UnsupportedLayerError,
        UnusedRuleWarning,
    )
    from mixq.export.onnx_integer import export_onnx
    from mixq.export.packed import load_packed, save_packed
    from mixq.export.qonnx import export_qonnx
    from mixq.integer import IntegerModel, to_integer
    from mixq.mappings import register_layer_mapping
    from mixq.nn.act_quant import ActQuantizer
    from mixq.nn.layers import QuantConv2d, QuantLinear
    from mixq.nn.weight_quant import RowWeightQuantizer
    from mixq.plan import LayerPlan, LayerShape, Plan
    from mixq.ratio import Ratio
    from mixq.recipe import LayerConfig, Recipe, Rule
    from mixq.schemes import Candidate, Scheme
    from mixq.scoring import register_row_scorer
    from mixq.sensitivity import (
        HessianRowScorer,
        HutchinsonConfig,
        SensitivityTable,
        hessian_rmsmp_plan,
        hutchinson_traces,
        perturbation_table,
    )
    from mixq.shapes import measure_layer_shapes
    from mixq.summary import LayerSummary, ModelSummary, describe
    from mixq.swap import quantizable_layer_names
    from mixq.toggle import set_quantization
    from mixq.train import TrainConfig, TrainResult
