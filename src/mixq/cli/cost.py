"""``mixq cost``: what a plan costs on an FPGA, layer by layer, and in total.

    mixq cost --device xc7z045 --plan plan.json --model resnet18-imagenet -o out/
    mixq cost --device xc7z020 --ratio rmsmp --model resnet20

Prints a per-layer table (rows per candidate, MACs, weight size, BOPs, cycles of each
array) and the totals, and with ``--output`` writes ``cost.json`` and ``cost.png``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from mixq.errors import HardwareCostError
from mixq.hw import AcceleratorConfig, CostReport, FpgaCostModel, available_devices, uniform_plan
from mixq.plan import LayerShape, Plan
from mixq.recipe import PRESET_RATIOS
from mixq.shapes import measure_layer_shapes

log = logging.getLogger("mixq")

# Built-in models: (constructor, input shape of one sample).
MODELS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet20": ("mixq.models.cifar_resnet:resnet20", (3, 32, 32)),
    "resnet32": ("mixq.models.cifar_resnet:resnet32", (3, 32, 32)),
    "resnet18-imagenet": ("mixq.models.resnet_imagenet:resnet18_imagenet", (3, 224, 224)),
    "small-cnn": ("mixq.models.small_cnn:SmallCNN", (1, 28, 28)),
}


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "cost",
        parents=[common],
        help="cost a plan on an FPGA: cycles, LUT/DSP/BRAM use, BOPs and size per layer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--device",
        required=True,
        help=f"a bundled device ({', '.join(available_devices())}) or a device YAML file",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--plan", type=Path, help="a plan JSON file (mixq.plan.Plan)")
    what.add_argument(
        "--ratio",
        help="one ratio for every layer: a preset "
        f"({', '.join(PRESET_RATIOS)}) or e.g. 'sp2-4:0.6,fixed-4:0.35,fixed-8:0.05'",
    )
    shapes = parser.add_mutually_exclusive_group(required=True)
    shapes.add_argument("--model", choices=sorted(MODELS), help="a built-in model")
    shapes.add_argument(
        "--shapes", type=Path, help="a JSON file mapping layer names to mixq.plan.LayerShape"
    )
    parser.add_argument(
        "--first-last",
        default="fixed-8",
        help="with --ratio: ratio of the first and last layer, as the presets ('none': same)",
    )
    parser.add_argument(
        "--act-bits", type=int, default=8, help="activation bits where the plan sets none"
    )
    parser.add_argument(
        "--lut-share",
        type=float,
        default=AcceleratorConfig.lut_share,
        help="share of LUTs/FFs/carry the MAC arrays may take (default %(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    shapes, label = _shapes(args)
    plan = _plan(args, shapes)
    model = FpgaCostModel(args.device, AcceleratorConfig(lut_share=args.lut_share))
    report = model.cost(shapes, plan, act_bits=args.act_bits, model=label)
    print(format_report(report))
    if args.output is not None:
        out = Path(args.output)
        report.save(out / "cost.json")
        try:
            from mixq.hw.plot import plot_layer_cycles

            plot_layer_cycles(report, out / "cost.png")
        except HardwareCostError as exc:  # matplotlib missing: the JSON is what matters
            log.warning("no plot: %s", exc)
        log.info("wrote %s", out / "cost.json")
    return 0


def _shapes(args: argparse.Namespace) -> tuple[dict[str, LayerShape], str]:
    if args.shapes is not None:
        return load_shapes(args.shapes), args.shapes.stem
    return model_shapes(args.model), args.model


def model_shapes(name: str) -> dict[str, LayerShape]:
    """Layer shapes of a built-in model, measured with one forward pass of zeros."""
    target, sample = MODELS[name]
    module, _, attr = target.partition(":")
    build: Callable[[], torch.nn.Module] = getattr(importlib.import_module(module), attr)
    return measure_layer_shapes(build(), torch.zeros(1, *sample))


def load_shapes(path: Path) -> dict[str, LayerShape]:
    """Layer shapes from JSON: ``{name: {kind, rows, macs_per_row, positions, ...}}``."""
    if not path.is_file():
        raise HardwareCostError(f"shapes file not found: {path}")
    try:
        data = json.loads(path.read_text())
        return {name: LayerShape.from_dict({**d, "name": name}) for name, d in data.items()}
    except json.JSONDecodeError as exc:
        raise HardwareCostError(f"shapes file {path} is not valid JSON: {exc}") from None
    except (TypeError, AttributeError) as exc:
        raise HardwareCostError(f"shapes file {path} is malformed: {exc}") from None


def _plan(args: argparse.Namespace, shapes: Mapping[str, LayerShape]) -> Plan:
    if args.plan is not None:
        return Plan.load(args.plan)
    ratio = PRESET_RATIOS.get(args.ratio, args.ratio)
    edge = None if args.first_last.lower() == "none" else args.first_last
    return uniform_plan(shapes, ratio, edge_ratio=PRESET_RATIOS.get(edge or "", edge))


def format_report(report: CostReport) -> str:
    """The per-layer table, the totals and the design, as text."""
    head = (
        f"{'layer':24s} {'rows per candidate':34s} {'a':>2s} {'MMACs':>8s} "
        f"{'w KiB':>8s} {'GBOPs':>7s} {'kcycles':>9s} {'DSP%':>5s} {'LUT%':>5s} {'BRAM':>5s}"
    )
    lines = [head, "-" * len(head)]
    for layer in report.layers:
        rows = " ".join(f"{c}:{n}" for c, n in layer.rows.items())
        cycles = layer.cycles or 0
        lines.append(
            f"{layer.name[:24]:24s} {rows[:34]:34s} {layer.act_bits:2d} "
            f"{layer.macs / 1e6:8.2f} {layer.weight_bits / 8192:8.1f} {layer.bops / 1e9:7.2f} "
            f"{cycles / 1e3:9.1f} {_busy(layer.dsp_cycles, cycles):>5s} "
            f"{_busy(layer.lut_cycles, cycles):>5s} {layer.bram36 or 0:5d}"
        )
    total = report.totals
    lines += [
        "-" * len(head),
        f"total: {total.macs / 1e6:.1f} M MACs, {total.weight_kib:.1f} KiB of weights "
        f"({report.eq_bits:.2f} eq. bits), {total.gbops:.2f} G BOPs",
    ]
    if report.design is not None and total.cycles is not None and total.latency_s:
        d = report.design
        used, have = d.used, d.available
        units = ", ".join(f"{c}: {n}" for c, n in d.lut_units.items()) or "none"
        lines += [
            f"       {total.cycles:,} cycles = {total.latency_s * 1e3:.3f} ms at "
            f"{d.clock_mhz:g} MHz ({1 / total.latency_s:.1f} samples/s, "
            f"{2 * total.macs / total.latency_s / 1e9:.1f} GOPS)",
            f"design on {d.device}: DSP {used.dsps:.0f}/{have.dsps:.0f}, "
            f"LUT {used.luts:.0f}/{have.luts:.0f}, FF {used.ffs:.0f}/{have.ffs:.0f}, "
            f"carry {used.carry:.0f}/{have.carry:.0f}, BRAM36 (largest layer) "
            f"{used.bram36:.0f}/{have.bram36:.0f}",
            f"       LUT-array units: {units}; DSP array MACs/cycle: "
            + (", ".join(f"{c}: {n}" for c, n in d.dsp_macs_per_cycle.items()) or "none"),
        ]
    if report.unplanned:
        lines.append(f"not in the plan (left in float, not costed): {', '.join(report.unplanned)}")
    return "\n".join(lines)


def _busy(array_cycles: int | None, cycles: int) -> str:
    return f"{100 * (array_cycles or 0) / cycles:.0f}" if cycles else "-"
