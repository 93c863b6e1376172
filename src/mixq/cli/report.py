"""``mixq report``: what a quantised model holds, layer by layer, in text, JSON and pictures.

    mixq report out/quantized.safetensors -o report/
    mixq report mixq-demo/rmsmp/quantized.safetensors --results mixq-demo/demo.json -o report/
    mixq report --results a/eval.json b/eval.json -o report/

Prints, per layer, the rows of each candidate (scheme and bits), the equivalent bits, the
activation bits and the stored size, then the model's totals and its float layers. Writes
``report.json`` (the same, with every row's candidate), ``assignment.png`` (one strip per
layer, one cell per row, coloured by candidate) and, given result files (such as the
demo's ``demo.json`` or ``mixq eval``'s ``eval.json``), ``accuracy_bits.png``.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial
from pathlib import Path

from mixq.cli._common import add_command, add_model_option, load_model
from mixq.cli._plots import draw_or_warn, plot_accuracy_bits, plot_assignment
from mixq.cli._report_data import ModelReport, build_report, format_report
from mixq.cli._results import ResultFile
from mixq.errors import CheckpointError
from mixq.summary import ModelSummary, describe

log = logging.getLogger("mixq")

SUMMARY = (  # the line in `mixq --help`
    "per-layer summary of a quantised model; heat strip and accuracy-vs-bits plots"
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(subparsers, common, "report", __doc__, help=SUMMARY)
    parser.add_argument("checkpoint", type=Path, nargs="?", help="a quantized.safetensors file")
    add_model_option(parser, required=False)
    parser.add_argument(
        "--results",
        type=Path,
        nargs="+",
        default=[],
        metavar="JSON",
        help="result files whose rows to plot as accuracy against equivalent bits",
    )
    parser.add_argument(
        "--metric", default="top1", help="the accuracy key of the result rows (default top1)"
    )
    parser.set_defaults(handler=run, outputs=planned_outputs, output="mixq-report")


def planned_outputs(args: argparse.Namespace) -> list[Path]:
    out = Path(args.output)
    files = [out / "report.json", out / "assignment.png"] if args.checkpoint else []
    return files + ([out / "accuracy_bits.png"] if args.results else [])


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is None and not args.results:
        raise CheckpointError("nothing to report: give a checkpoint, --results files, or both")
    out = Path(args.output)
    results = [(path, ResultFile.load(path)) for path in args.results]
    if args.checkpoint is not None:
        report, summary = _model_report(args.checkpoint, args.model)
        print(format_report(report, summary))
        report.save(out / "report.json")
        draw_or_warn(
            lambda: plot_assignment(
                report.assignments,
                out / "assignment.png",
                title=f"{report.model} {report.method}: candidate of every row "
                f"({report.eq_bits:.2f} equivalent bits)",
            )
        )
    groups = _by_data_set(results)
    for data_set, group in groups.items():
        series = [(_label(path, result), result.rows) for path, result in group]
        name = "accuracy_bits.png" if len(groups) == 1 else f"accuracy_bits_{_slug(data_set)}.png"
        title = f"{data_set}: accuracy against equivalent weight bits"
        draw_or_warn(
            partial(plot_accuracy_bits, series, out / name, metric=args.metric, title=title)
        )
    log.info("wrote the report into %s", out)
    return 0


def _model_report(path: Path, model_name: str | None) -> tuple[ModelReport, ModelSummary]:
    loaded = load_model(path, model_name)
    if not loaded.quantized:
        raise CheckpointError(f"{path} holds float weights; report needs a quantised model")
    report = build_report(
        loaded.model, loaded.spec.build(), model_name=loaded.spec.name, method=loaded.method
    )
    return report, describe(loaded.model)


def _by_data_set(
    results: list[tuple[Path, ResultFile]],
) -> dict[str, list[tuple[Path, ResultFile]]]:
    """Result files grouped by the data set (else the model) they were measured on: one
    figure each, never two data sets on one axis."""
    groups: dict[str, list[tuple[Path, ResultFile]]] = {}
    for path, result in results:
        settings = result.settings
        key = str(settings.get("data") or settings.get("model") or "results")
        groups.setdefault(key, []).append((path, result))
    return groups


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-") or "data"


def _label(path: Path, result: ResultFile) -> str:
    return f"{result.benchmark} ({path.parent.name or path.name})"
