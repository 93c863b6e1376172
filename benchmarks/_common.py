"""Shared plumbing of the benchmark scripts: environment record, result files, evaluation."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from mixq.data import default_data_root
from mixq.io import atomic_write_text
from mixq.machine import machine_record
from mixq.train import TrainConfig

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_run_options(parser: argparse.ArgumentParser, *, threads: int = 2) -> None:
    """``--data-root``, ``--threads`` and ``--output``, which every benchmark takes."""
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder with cifar10-jpeg/, resnet-cifar10/, sts-b/ (default ../shared/data)",
    )
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR)


def start_run(args: argparse.Namespace) -> Path:
    """Set the thread count, print the command that reproduces the run; the data root."""
    torch.set_num_threads(args.threads)
    print(f"# {command_line()}", flush=True)
    return args.data_root or default_data_root()


def resnet20_qat_config(epochs: int) -> TrainConfig:
    """The ResNet-20 QAT budget that the QAT and allocation benchmarks share: SGD, cosine,
    logit distillation from the float model."""
    return TrainConfig(
        epochs=epochs,
        lr=0.005,
        warmup_epochs=0.1,
        distill="logits",
        task_weight=1.0,
        distill_weight=1.0,
        temperature=4.0,
        weight_decay=1e-4,
    )


def command_line() -> str:
    """The command that reproduces this run, as the result file records it."""
    script = Path(sys.argv[0]).resolve().relative_to(Path(__file__).resolve().parents[1])
    return shlex.join(["python", str(script), *sys.argv[1:]])


def write_result(
    name: str, settings: dict[str, Any], rows: list[dict[str, Any]], directory: Path = RESULTS_DIR
) -> Path:
    """Write ``<directory>/<name>.json`` in the format of BENCHMARKS.md (atomically)."""
    result = {
        "benchmark": name,
        "command": command_line(),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": machine_record(),
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
