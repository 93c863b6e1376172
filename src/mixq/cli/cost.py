"""``mixq cost``: what a plan costs on an FPGA, layer by layer, and in total.

    mixq cost --device xc7z045 --plan plan.json --model resnet18-imagenet -o out/
    mixq cost --device xc7z020 --ratio rmsmp --model resnet20
    mixq cost --device xc7z020 --checkpoint mixq-quantized/quantized.safetensors

Prints a per-layer table (rows per candidate, MACs, weight size, BOPs, cycles of each
array) and the totals; writes ``cost.json`` and ``cost.png`` only with ``--output``.
``--checkpoint`` costs a quantised model as it is: its rows per candidate and activation
bits, its layer shapes. ``--act-bits`` given sets every layer's activation bits (also over
a plan's or a checkpoint's own); without it, the plan's or checkpoint's bits hold, else 8.
Here ``--device`` is the FPGA; the model's shapes are measured on the CPU. The weight
size is the weights alone at their bits (what the accelerator moves), not the model size
``mixq report`` prints, which adds each row's scale, code and bias.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import torch

from mixq.cli._common import act_bits_type, add_command, load_model, require_text_file
from mixq.cli._zoo import MODELS as ZOO
from mixq.errors import HardwareCostError
from mixq.hw import AcceleratorConfig, CostReport, FpgaCostModel, available_devices, uniform_plan
from mixq.hw.fpga import DSP_PACKINGS
from mixq.jsonfile import read_json
from mixq.plan import LayerPlan, LayerShape, Plan
from mixq.ratio import Ratio
from mixq.recipe import PRESET_RATIOS
from mixq.shapes import measure_layer_shapes

log = logging.getLogger("mixq")

# The CLI's models, and one only costed here (no data set of it ships): constructor and
# input shape of one sample.
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, ...]]] = {
    **{name: (spec.build, spec.input_shape) for name, spec in ZOO.items()},
    "resnet18-imagenet": (lambda: _imagenet_resnet18(), (3, 224, 224)),
}
TORCH_DEVICE_OPTION = False  # this command's --device is the FPGA


def _imagenet_resnet18() -> torch.nn.Module:
    from mixq.models.resnet_imagenet import resnet18_imagenet

    return resnet18_imagenet()


SUMMARY = (  # the line in `mixq --help`
    "cost a plan on an FPGA: cycles, LUT/DSP/BRAM use, BOPs and size per layer"
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(subparsers, common, "cost", __doc__, help=SUMMARY)
    parser.add_argument(
        "--device",
        required=True,
        help=f"a bundled device ({', '.join(available_devices())}) or a device YAML file",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--plan", type=Path, help="a plan JSON file (mixq.plan.Plan)")
    what.add_argument(
        "--checkpoint", type=Path, help="a quantised model (quantized.safetensors) as it is"
    )
    what.add_argument(
        "--ratio",
        help="one ratio for every layer: a preset "
        f"({', '.join(PRESET_RATIOS)}) or e.g. 'sp2-4:0.6,fixed-4:0.35,fixed-8:0.05'",
    )
    shapes = parser.add_mutually_exclusive_group()
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
        "--act-bits",
        type=act_bits_type,
        help="activation bits of every layer (default: the plan's or checkpoint's, else 8)",
    )
    parser.add_argument(
        "--lut-share",
        type=float,
        default=AcceleratorConfig.lut_share,
        help="share of LUTs/FFs/carry the MAC arrays may take (default %(default)s)",
    )
    parser.add_argument(
        "--dsp-packing",
        choices=DSP_PACKINGS,
        default=AcceleratorConfig.dsp_packing,
        help="pack each layer's DSP slices for its own activation bits, or the whole array "
        "for the widest (default %(default)s; docs/hardware.md)",
    )
    parser.set_defaults(handler=run, outputs=planned_outputs)


def planned_outputs(args: argparse.Namespace) -> list[Path]:
    if args.output is None:
        return []
    return [Path(args.output) / "cost.json", Path(args.output) / "cost.png"]


def run(args: argparse.Namespace) -> int:
    device_path = Path(args.device)
    if device_path.suffix in (".yaml", ".yml") or device_path.is_file():
        require_text_file(device_path, "device file")
    if args.checkpoint is not None:
        shapes, plan, label = _checkpoint_plan(args.checkpoint)
    else:
        if args.model is None and args.shapes is None:
            raise HardwareCostError("say whose layers to cost: --model, --shapes or --checkpoint")
        shapes, label = _shapes(args)
        plan = _plan(args, shapes)
    if args.act_bits is not None:
        plan = with_act_bits(plan, args.act_bits)
    config = AcceleratorConfig(lut_share=args.lut_share, dsp_packing=args.dsp_packing)
    model = FpgaCostModel(args.device, config)
    report = model.cost(
        shapes, plan, act_bits=8 if args.act_bits is None else args.act_bits, model=label
    )
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
    build, sample = MODELS[name]
    return measure_layer_shapes(build(), torch.zeros(1, *sample))


def with_act_bits(plan: Plan, act_bits: int) -> Plan:
    """``plan`` with every layer's activation bits set to ``act_bits``."""
    layers = {name: replace(layer, act_bits=act_bits) for name, layer in plan.layers.items()}
    return replace(plan, layers=layers)


def _checkpoint_plan(path: Path) -> tuple[dict[str, LayerShape], Plan, str]:
    """Shapes and the plan a quantised checkpoint realises: its rows per candidate."""
    from mixq.summary import describe

    loaded = load_model(path, None)
    if not loaded.quantized:
        raise HardwareCostError(f"{path} holds float weights; --checkpoint needs a quantised one")
    shapes = measure_layer_shapes(loaded.spec.build(), loaded.spec.example_input())
    layers = {
        layer.name: LayerPlan(
            Ratio.parse(",".join(f"{c}:{n / layer.rows}" for c, n in layer.counts.items() if n)),
            act_bits=layer.act_bits,
        )
        for layer in describe(loaded.model).layers
    }
    return shapes, Plan(layers, method=loaded.method), f"{loaded.spec.name} {loaded.method}"


def load_shapes(path: Path) -> dict[str, LayerShape]:
    """Layer shapes from JSON: ``{name: {kind, rows, macs_per_row, positions, ...}}``."""
    data = read_json(path, "shapes file", HardwareCostError)
    try:
        return {name: LayerShape.from_dict({**d, "name": name}) for name, d in data.items()}
    except (TypeError, AttributeError) as exc:
        raise HardwareCostError(f"shapes file {path} is malformed: {exc}") from None


def _plan(args: argparse.Namespace, shapes: Mapping[str, LayerShape]) -> Plan:
    if args.plan is not None:
        return Plan.load(require_text_file(args.plan, "plan file"))
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
        f"total: {total.macs / 1e6:.1f} M MACs, weights alone {total.weight_kib:.1f} KiB "
        f"({report.eq_bits:.2f} eq. bits), {total.gbops:.2f} G BOPs",
        "       (no scales, codes or biases: the model size mixq report prints adds them)",
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
