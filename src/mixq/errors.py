"""Typed errors: every bad input ends in one of these, with a message that names the problem.

Each class also derives from the built-in exception a caller would naturally catch
(``ValueError`` for bad values, ``TypeError`` for unsupported types), so generic handlers work.
"""

from __future__ import annotations


class MixqError(Exception):
    """Base class of every error mixq raises on purpose."""


class SchemeError(MixqError, ValueError):
    """An unknown quantisation scheme, or bits outside the range a scheme supports."""


class RatioError(MixqError, ValueError):
    """A ratio of candidates that is empty, negative, duplicated or does not sum to 1."""


class RecipeError(MixqError, ValueError):
    """A recipe (or recipe file) that cannot be parsed or applied."""


class UnsupportedLayerError(MixqError, TypeError):
    """A recipe asks to quantise a module type mixq cannot quantise."""


class NoQuantizableLayerError(MixqError, ValueError):
    """A model with no layer that the recipe quantises."""


class NonFiniteWeightError(MixqError, ValueError):
    """A weight tensor holding NaN or Inf values."""


class CalibrationError(MixqError, ValueError):
    """Activation calibration that could not run (empty data, uncalibrated quantiser)."""


class CheckpointError(MixqError):
    """A checkpoint that is missing, corrupt, or does not match the model."""


class DataError(MixqError):
    """A data set that is missing or unreadable."""


class UnusedRuleWarning(UserWarning):
    """A recipe rule that matched no layer of the model (usually a typo in a name)."""


class SensitivityError(MixqError, ValueError):
    """A Hessian sensitivity run or table that cannot be computed, read, or used."""


class AllocationError(MixqError, ValueError):
    """An allocation problem that is malformed (unknown layers, missing costs, bad ties)."""


class InfeasibleBudgetError(AllocationError):
    """Budgets that no plan meets; ``minimums`` holds the smallest value of each limit that
    fits when that limit stands alone."""

    def __init__(self, message: str, minimums: dict[str, float]) -> None:
        super().__init__(message)
        self.minimums = dict(minimums)


class DeviceError(MixqError, ValueError):
    """A device description (YAML) that is missing, unknown, or has missing or bad resources."""


class HardwareCostError(MixqError, ValueError):
    """A plan, layer shapes or unit table that a hardware cost model cannot cost."""


class IntegerConversionError(MixqError, ValueError):
    """A quantised model that cannot run integer-only: a float input, an uncalibrated
    quantiser, or values that could overflow int32."""


class PackedFormatError(CheckpointError):
    """A packed integer checkpoint that is truncated, edited or of another format version."""


class TrainConfigError(MixqError, ValueError):
    """A training configuration value out of range or unknown."""


class TrainingDivergedError(NonFiniteWeightError):
    """Training reached a non-finite loss or weight; ``epoch`` and ``step`` (1-based) say
    where. Nothing is saved from a diverged run."""

    def __init__(self, message: str, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class FloatLayerWarning(UserWarning):
    """A layer with weights that mixq does not quantise (Conv1d, GPT-2's Conv1D, ...): it
    stays in float and is listed in ``describe(model).float_layers``."""


class UnfoldedBatchNormWarning(UserWarning):
    """A BatchNorm that cannot be folded into a conv (its conv is used twice, or does not
    feed it directly): it stays a float layer."""


class CalibrationDataWarning(UserWarning):
    """Calibration used fewer batches than the data held (``calibration_batches``)."""


class UncheckedCheckpointWarning(UserWarning):
    """A quantised checkpoint written before checksums: its tensors could not be verified."""


class OutputError(MixqError, OSError):
    """A destination that cannot be written: a read-only or missing folder, a file where a
    folder is expected, no permission, a full disk, or the very file a command reads."""


class FastEngineUnavailableError(MixqError, ImportError):
    """The fused C++ integer kernels cannot be built or loaded here (no C++ compiler, no
    ninja, a failed build); the reference and int8 engines still run."""


class DistributedSetupError(MixqError, ValueError):
    """A torchrun environment or launch that mixq cannot run under: an inconsistent
    RANK/WORLD_SIZE, a CUDA index shared by several processes, a loader it cannot shard."""
