"""The result of a Hessian sensitivity run: per-layer and per-row trace estimates, saved as JSON.

Torch-free, so that allocation and the CLI read a table without running anything. Traces are
of the loss's Hessian with respect to the weights the quantiser sees (BatchNorm folded in);
``trace`` sums the diagonal over a layer, ``row_traces`` over each row (output channel).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixq.errors import SensitivityError
from mixq.io import atomic_write_text
from mixq.jsonfile import read_json
from mixq.plan import LayerShape
from mixq.sensitivity.config import HutchinsonConfig

TABLE_FORMAT = "mixq.sensitivity-table"
TABLE_VERSION = 1


@dataclass(frozen=True)
class TraceRun:
    """How a table was measured: the model, the settings, and what the probing cost."""

    model: str  # a name such as "resnet20", or free text; "" if not told
    weights: str  # the weights file the model was loaded from; "" if not told
    loss: str  # name of the loss function
    config: HutchinsonConfig
    probes: int  # the most probes any layer received
    hvp_count: int  # Hessian-vector products computed, over all layers and batches
    samples: int  # input samples over all products
    converged: bool  # every layer met the tolerance (False: some stopped at the cap)
    max_rel_stderr: float  # the largest per-layer standard error / |trace| at the end
    seconds: float  # wall time of the whole run
    # "hutchinson" (probes; ``config`` applies) or "gauss-newton" (exact per-sample
    # Jacobians, :mod:`mixq.sensitivity.gauss_newton`; zero standard error)
    method: str = "hutchinson"
    # gauss-newton: the largest relative gap between the Hessian and the Gauss-Newton
    # curvature along a random direction per layer (0 up to rounding: the traces are the
    # Hessian's); None for Hutchinson
    hessian_gap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "config": asdict(self.config)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceRun:
        return cls(**{**data, "config": HutchinsonConfig.from_dict(data["config"])})


@dataclass(frozen=True, eq=False)
class LayerSensitivity:
    """One layer's Hutchinson estimates; arrays have one entry per row."""

    shape: LayerShape  # the layer's work; ``shape.weights`` is the trace's ``n``
    probes: int  # probes this layer's estimates average
    trace: float  # estimate of the sum of the Hessian diagonal over the layer's weights
    trace_stderr: float  # standard error of ``trace`` over the probes
    row_traces: np.ndarray  # (rows,) the diagonal summed over each row
    row_stderr: np.ndarray  # (rows,) standard errors of ``row_traces``

    def __post_init__(self) -> None:
        for key in ("row_traces", "row_stderr"):
            values = np.asarray(getattr(self, key), dtype=np.float64).reshape(-1)
            values.setflags(write=False)
            object.__setattr__(self, key, values)
            if values.size != self.shape.rows:
                raise SensitivityError(
                    f"layer {self.shape.name!r}: {key} has {values.size} entries, "
                    f"the layer {self.shape.rows} rows"
                )

    @property
    def mean_trace(self) -> float:
        """``trace / n``: HAWQ's average Hessian diagonal per weight."""
        return self.trace / max(self.shape.weights, 1)

    @property
    def row_mean_traces(self) -> np.ndarray:
        """Each row's trace divided by its number of weights."""
        return self.row_traces / max(self.shape.macs_per_row, 1)

    @property
    def rel_stderr(self) -> float:
        return self.trace_stderr / abs(self.trace) if self.trace else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape.to_dict(),
            "probes": self.probes,
            "trace": self.trace,
            "trace_stderr": self.trace_stderr,
            "row_traces": self.row_traces.tolist(),
            "row_stderr": self.row_stderr.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerSensitivity:
        return cls(
            LayerShape.from_dict(data["shape"]),
            int(data["probes"]),
            float(data["trace"]),
            float(data["trace_stderr"]),
            np.asarray(data["row_traces"], dtype=np.float64),
            np.asarray(data["row_stderr"], dtype=np.float64),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerSensitivity):
            return NotImplemented
        return (
            self.shape == other.shape
            and self.probes == other.probes
            and self.trace == other.trace
            and self.trace_stderr == other.trace_stderr
            and np.array_equal(self.row_traces, other.row_traces)
            and np.array_equal(self.row_stderr, other.row_stderr)
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays


@dataclass(frozen=True)
class SensitivityTable:
    """Hessian traces by module name (as :func:`mixq.quantizable_layer_names` gives them).

    >>> import numpy as np
    >>> shape = LayerShape("fc", "linear", rows=2, macs_per_row=3, positions=1,
    ...                    input_elements=3, output_elements=2)
    >>> layer = LayerSensitivity(shape, 10, 6.0, 0.1, np.array([4.0, 2.0]), np.array([0.1, 0.1]))
    >>> run = TraceRun("toy", "", "cross_entropy", HutchinsonConfig(), probes=10, hvp_count=10,
    ...                samples=80, converged=True, max_rel_stderr=0.02, seconds=0.5)
    >>> table = SensitivityTable({"fc": layer}, run)
    >>> table.layer("fc").mean_trace, table.layer("fc").row_mean_traces.tolist()
    (1.0, [1.3333333333333333, 0.6666666666666666])
    >>> SensitivityTable.from_dict(table.to_dict()) == table
    True
    """

    layers: Mapping[str, LayerSensitivity]
    run: TraceRun
    version: int = field(default=TABLE_VERSION)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", dict(self.layers))
        if self.version != TABLE_VERSION:
            raise SensitivityError(
                f"sensitivity table version {self.version} is not supported ({TABLE_VERSION})"
            )

    def layer(self, name: str) -> LayerSensitivity:
        try:
            return self.layers[name]
        except KeyError:
            known = ", ".join(self.layers) or "none"
            raise SensitivityError(
                f"the sensitivity table has no layer {name!r}; it holds: {known}"
            ) from None

    @property
    def shapes(self) -> dict[str, LayerShape]:
        return {name: layer.shape for name, layer in self.layers.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "version": self.version,
            "run": self.run.to_dict(),
            "layers": {name: layer.to_dict() for name, layer in self.layers.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SensitivityTable:
        if not isinstance(data, Mapping) or data.get("format") != TABLE_FORMAT:
            raise SensitivityError(f"not a sensitivity table (format must be {TABLE_FORMAT!r})")
        try:
            layers = {n: LayerSensitivity.from_dict(d) for n, d in data["layers"].items()}
            return cls(layers, TraceRun.from_dict(data["run"]), data.get("version", TABLE_VERSION))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, SensitivityError):
                raise
            raise SensitivityError(f"malformed sensitivity table: {exc!r}") from None

    def save(self, path: str | Path) -> None:
        """Write as JSON (a temporary file, then a rename: never half-written)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SensitivityTable:
        return cls.from_dict(read_json(path, "sensitivity table", SensitivityError))

    def format_rows(self) -> list[str]:
        """One line per layer: weights, trace, trace per weight, relative standard error."""
        header = f"{'weights':>8} {'probes':>6} {'trace':>12} {'trace/n':>11} {'rel_se':>7}"
        lines = [f"{'layer':<24} {header}"]
        for name, layer in self.layers.items():
            lines.append(
                f"{name:<24} {layer.shape.weights:>8} {layer.probes:>6} {layer.trace:>12.5g} "
                f"{layer.mean_trace:>11.4g} {layer.rel_stderr:>7.2%}"
            )
        return lines
