"""Shared plumbing of the benchmark scripts: environment record, result files, evaluation."""

from __future__ import annotations

import json
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from mixq.io import atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def command_line() -> str:
    """The command that reproduces this run, as the result file records it."""
    script = Path(sys.argv[0]).resolve().relative_to(Path(__file__).resolve().parents[1])
    return shlex.join(["python", str(script), *sys.argv[1:]])


def environment() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def write_result(
    name: str, settings: dict[str, Any], rows: list[dict[str, Any]], directory: Path = RESULTS_DIR
) -> Path:
    """Write ``<directory>/<name>.json`` in the format of BENCHMARKS.md (atomically)."""
    result = {
        "benchmark": name,
        "command": command_line(),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": environment(),
        "settings": settings,
        "rows": rows,
    }
    path = directory / f"{name}.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


@torch.no_grad()
def top1(model: torch.nn.Module, loader: Any) -> float:
    """Top-1 accuracy (a fraction) of ``model`` over ``loader``."""
    model.eval()
    correct = total = 0
    for images, labels in loader:
        correct += int((model(images).argmax(dim=1) == labels).sum())
        total += int(labels.numel())
    return correct / total
