"""The FPGA model's throughput ratios beside the ones MSP and RMSMP report.

MSP reports about 2x and 4x throughput over using DSPs alone on two Zynq-7000 parts
(XC7Z020, XC7Z045); RMSMP reports 3.65x end-to-end for ResNet-18 on ImageNet against
4-bit fixed-point. With ResNet-18's layer shapes (224x224) measured here, every ratio is
recomputed from the device files and the synthesised unit costs; nothing is fitted to
the papers. Each claim row gives the gain against two baselines (fixed-4 on DSPs alone;
fixed-4 on DSPs plus LUT-built fixed-4 MACs in the same LUT share) and with and without
off-chip memory (the board's DDR bandwidth, batch 1). The assumptions are recorded with
their plausible ranges and swept one at a time (``kind: "sensitivity"``; see
docs/hardware.md). ``kind: "dsp_packing"`` rows give the images/s with the first and last
layer taking 8-bit inputs (as an image does), the DSP array packed per layer and for the
widest activation (``AcceleratorConfig.dsp_packing``).

    python benchmarks/fpga_cost.py
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS_DIR, command_line, write_result

from mixq.hw import (
    AcceleratorConfig,
    Device,
    FpgaCostModel,
    assumptions,
    derive_ratio,
    filled_baseline,
    load_device,
    lut_fixed_units,
    mac_loads,
    throughput,
    throughput_curve,
    uniform_plan,
)
from mixq.hw.fpga import DSP_PACKINGS
from mixq.models.resnet_imagenet import resnet18_imagenet
from mixq.plan import LayerPlan, LayerShape, Plan
from mixq.ratio import Ratio
from mixq.schemes import Candidate
from mixq.shapes import measure_layer_shapes

DEVICES = ("xc7z020", "xc7z045")
# Paired by size (smaller part, smaller gain): MSP's abstract gives "about 2x and 4x on
# two devices" without saying which is which.
MSP_PAPER = {"xc7z020": 2.0, "xc7z045": 4.0}
RMSMP_PAPER = 3.65
RMSMP_RATIO = {"sp2-4": 0.6, "fixed-4": 0.35, "fixed-8": 0.05}
EDGE = "fixed-8"  # first and last layer, as mixq's presets (and both papers) keep them
LUT_SHARES = (0.3, 0.5, 0.7, 0.9, 1.0)
MSP_CHOICE = (("sp2-4", "fixed-4"), 4.0)
FIXED4 = Candidate.parse("fixed-4")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lut-share", type=float, default=AcceleratorConfig.lut_share)
    parser.add_argument(
        "--dsp-packing",
        choices=DSP_PACKINGS,
        default=AcceleratorConfig.dsp_packing,
        help="the DSP array's packing for the claim and sensitivity rows",
    )
    parser.add_argument(
        "--skip-paper-shares",
        action="store_true",
        help="skip the LUT-share bisection for each paper figure (the slowest part)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR)
    return parser.parse_args()


def ratio_text(shares: dict[str, float]) -> str:
    return ",".join(f"{c}:{s:.6f}" for c, s in shares.items())


def end_to_end(
    model: FpgaCostModel, shapes: dict[str, LayerShape], ratio: str, act_bits: int, edge: bool
) -> int:
    plan = uniform_plan(shapes, ratio, edge_ratio=EDGE if edge else None)
    cycles = model.cost(shapes, plan, act_bits=act_bits).totals.cycles
    assert cycles is not None
    return cycles


def filled_cycles(model: FpgaCostModel, shapes: dict[str, LayerShape], act_bits: int) -> int:
    plan = uniform_plan(shapes, "fixed-4", edge_ratio=EDGE)
    return filled_baseline(model, shapes, plan, act_bits=act_bits).cycles


# How each method's ratio is chosen: fixed shares, or derived on the design at hand from
# (candidates, equivalent-bit budget).
Choice = dict[str, float] | tuple[tuple[str, ...], float]


def shares_for(model: FpgaCostModel, choice: Choice, act_bits: int) -> dict[str, float]:
    if isinstance(choice, dict):
        return choice
    candidates, budget = choice
    return derive_ratio(model, list(candidates), budget, act_bits=act_bits).ratio.to_dict()


def speedup(
    model: FpgaCostModel,
    shares: dict[str, float],
    act_bits: int,
    baseline: FpgaCostModel | None = None,
) -> float:
    """Peak throughput of ``shares`` over fixed-4 on the DSP array alone."""
    base = throughput(baseline or model, {"fixed-4": 1.0}, act_bits)
    return throughput(model, shares, act_bits) / base


def filled_peak(model: FpgaCostModel, act_bits: int) -> float:
    """Peak MACs per cycle of fixed-4 on the DSP array plus LUT-built fixed-4 MACs."""
    return throughput(model, {"fixed-4": 1.0}, act_bits) + lut_fixed_units(model, FIXED4, act_bits)


def gains(
    device: Device | str,
    config: AcceleratorConfig,
    shares: dict[str, float],
    shapes: dict[str, LayerShape],
    act_bits: int,
) -> dict[str, float]:
    """End-to-end gains (ResNet-18, first and last layer fixed-8) of ``shares`` against
    both baselines, with off-chip memory as ``config`` says; and the peak gains."""
    model = FpgaCostModel(device, config)
    mine = end_to_end(model, shapes, ratio_text(shares), act_bits, True)
    peak = throughput(model, shares, act_bits)
    return {
        "vs_dsp_only": end_to_end(model, shapes, "fixed-4", act_bits, True) / mine,
        "vs_filled": filled_cycles(model, shapes, act_bits) / mine,
        "peak_vs_dsp_only": peak / throughput(model, {"fixed-4": 1.0}, act_bits),
        "peak_vs_filled": peak / filled_peak(model, act_bits),
        "cycles": mine,
    }


def claim_row(
    method: str,
    device: str,
    choice: Choice,
    paper: float,
    config: AcceleratorConfig,
    shapes: dict[str, LayerShape],
    act_bits: int,
    paper_shares: bool,
) -> dict[str, Any]:
    """Speed-ups over both baselines, end to end on ResNet-18 (with and without DDR) and
    at peak."""
    model = FpgaCostModel(device, config)
    shares = shares_for(model, choice, act_bits)
    compute = dataclasses.replace(config, offchip_memory=False)
    ddr = gains(device, config, shares, shapes, act_bits)
    only = gains(device, compute, shares, shapes, act_bits)
    mixed = end_to_end(FpgaCostModel(device, compute), shapes, ratio_text(shares), act_bits, False)
    base_mixed = end_to_end(FpgaCostModel(device, compute), shapes, "fixed-4", act_bits, False)
    report = model.cost(
        shapes, uniform_plan(shapes, ratio_text(shares), edge_ratio=EDGE), act_bits=act_bits
    )
    transfer_bound = sum(
        layer.cycles
        for layer in report.layers
        if layer.transfer_cycles and layer.transfer_cycles >= (layer.compute_cycles or 0)
    )
    loads = {r: round(v, 4) for r, v in mac_loads(model, shares, act_bits).items()}
    clock = model.device.clock_mhz * 1e6
    assert report.design is not None and report.totals.cycles is not None
    return {
        "kind": "claim",
        "method": method,
        "device": device,
        "act_bits": act_bits,
        "ratio": {c: round(s, 4) for c, s in shares.items()},
        "paper_ratio": paper,
        "model_ratio": round(ddr["vs_dsp_only"], 3),
        "model_ratio_vs_filled": round(ddr["vs_filled"], 3),
        "model_ratio_compute_only": round(only["vs_dsp_only"], 3),
        "model_ratio_vs_filled_compute_only": round(only["vs_filled"], 3),
        "model_ratio_all_layers_mixed": round(base_mixed / mixed, 3),
        "model_peak_ratio": round(ddr["peak_vs_dsp_only"], 3),
        "model_peak_ratio_vs_filled": round(ddr["peak_vs_filled"], 3),
        "binding": [r for r, v in loads.items() if v >= max(loads.values()) * (1 - 1e-6)],
        "weights_on_chip": report.design.weights_on_chip,
        "share_of_cycles_transfer_bound": round(transfer_bound / report.totals.cycles, 3),
        "latency_ms": round(ddr["cycles"] / clock * 1e3, 3),
        "images_per_s": round(clock / ddr["cycles"], 2),
        "dsp_macs_per_slice_4bit": model.device.macs_per_dsp(4, act_bits),
        "dsp_bound_ceiling": round(_dsp_ceiling(model, shares, act_bits), 3),
        "lut_share_for_paper_peak": (
            _lut_share_for(paper, device, choice, act_bits) if paper_shares else None
        ),
    }


def _dsp_ceiling(model: FpgaCostModel, shares: dict[str, float], act_bits: int) -> float:
    """The speed-up if the LUT array were infinite: the DSP array alone sets the pace."""
    p4 = model.device.macs_per_dsp(4, act_bits)
    dsp_time = sum(
        s * p4 / model.device.macs_per_dsp(Candidate.parse(c).bits, act_bits)
        for c, s in shares.items()
        if model.on_dsp(Candidate.parse(c))
    )
    return 1.0 / dsp_time if dsp_time else float("inf")


def _lut_share_for(paper: float, device: str, choice: Choice, act_bits: int) -> float | None:
    """The LUT share at which the peak speed-up over DSPs alone equals the paper's (None
    if none does); a derived ratio is derived again at each share."""

    def gain(share: float) -> float:
        model = FpgaCostModel(device, AcceleratorConfig(lut_share=share))
        return speedup(model, shares_for(model, choice, act_bits), act_bits)

    low, high = 0.2, 1.0  # below 0.2 the packed readout leaves no carry chain
    if not gain(low) <= paper <= gain(high):
        return None
    for _ in range(20):
        mid = (low + high) / 2
        low, high = (mid, high) if gain(mid) < paper else (low, mid)
    return round((low + high) / 2, 3)


# One assumption at a time, over its plausible range (mixq.hw.assumptions).
SWEEPS: dict[str, tuple[float, ...]] = {
    "lut_share": (0.3, 0.5, 0.7, 0.9),
    "lut_clock_ratio": (0.6, 0.8, 1.0),
    "lane_overhead_luts": (0.0, 10.0, 20.0, 40.0),
    "ddr_gb_per_s": (2.1, 4.26, 8.5),
}


def sensitivity_rows(shapes: dict[str, LayerShape], act_bits: int) -> list[dict[str, Any]]:
    """MSP's gains (ratio derived again at each point) as each assumption moves."""
    rows = []
    for device_name in DEVICES:
        device = load_device(device_name)
        for name, values in SWEEPS.items():
            for value in values:
                config = AcceleratorConfig()
                dev = device
                if name == "ddr_gb_per_s":
                    dev = dataclasses.replace(device, ddr_gb_per_s=value)
                else:
                    config = dataclasses.replace(config, **{name: value})
                model = FpgaCostModel(dev, config)
                shares = shares_for(model, MSP_CHOICE, act_bits)
                g = gains(dev, config, shares, shapes, act_bits)
                rows.append(
                    {
                        "kind": "sensitivity",
                        "method": "msp",
                        "device": device_name,
                        "act_bits": act_bits,
                        "assumption": name,
                        "value": value,
                        "ratio": {c: round(s, 4) for c, s in shares.items()},
                        "model_ratio": round(g["vs_dsp_only"], 3),
                        "model_ratio_vs_filled": round(g["vs_filled"], 3),
                        "model_peak_ratio": round(g["peak_vs_dsp_only"], 3),
                        "model_peak_ratio_vs_filled": round(g["peak_vs_filled"], 3),
                    }
                )
    return rows


def packing_whatif_rows(act_bits: int) -> list[dict[str, Any]]:
    """Peak gains if the baseline and the mixed design packed 4-bit MACs differently (a
    device-file what-if: ``dsp_packing`` fixed instead of derived)."""
    rows = []
    for device_name in DEVICES:
        device = load_device(device_name)
        packings = {p: dataclasses.replace(device, dsp_packing={4: p, 8: 1}) for p in (1, 2)}
        for base_packing, packing in ((2, 2), (1, 1), (1, 2)):
            config = AcceleratorConfig()
            model = FpgaCostModel(packings[packing], config)
            baseline = FpgaCostModel(packings[base_packing], config)
            for method, choice in (("msp", MSP_CHOICE), ("rmsmp", RMSMP_RATIO)):
                shares = shares_for(model, choice, act_bits)
                rows.append(
                    {
                        "kind": "packing",
                        "method": method,
                        "device": device_name,
                        "act_bits": act_bits,
                        "baseline_dsp_macs_4bit": base_packing,
                        "dsp_macs_4bit": packing,
                        "ratio": {c: round(s, 4) for c, s in shares.items()},
                        "model_peak_ratio": round(speedup(model, shares, act_bits, baseline), 3),
                    }
                )
    return rows


def packing_rows(shapes: dict[str, LayerShape], act_bits: int) -> list[dict[str, Any]]:
    """Images/s and the gain over fixed-4 on the DSPs alone with the first and last layer
    at 8-bit inputs, the DSP array packed per layer and for the widest activation."""
    rows = []
    for device in DEVICES:
        shares = {
            "fixed-4": {"fixed-4": 1.0},
            "msp": shares_for(FpgaCostModel(device), MSP_CHOICE, act_bits),
            "rmsmp": RMSMP_RATIO,
        }
        for packing in DSP_PACKINGS:
            model = FpgaCostModel(device, AcceleratorConfig(dsp_packing=packing))
            cycles = {
                m: _edge_a8_cycles(model, shapes, ratio_text(r), act_bits)
                for m, r in shares.items()
            }
            clock = model.device.clock_mhz * 1e6
            for method, mine in cycles.items():
                rows.append(
                    {
                        "kind": "dsp_packing",
                        "method": method,
                        "device": device,
                        "act_bits": act_bits,
                        "edge_act_bits": 8,
                        "dsp_packing": packing,
                        "ratio": {c: round(v, 4) for c, v in shares[method].items()},
                        "images_per_s": round(clock / mine, 2),
                        "model_ratio": round(cycles["fixed-4"] / mine, 3),
                    }
                )
    return rows


def _edge_a8_cycles(
    model: FpgaCostModel, shapes: dict[str, LayerShape], ratio: str, act_bits: int
) -> int:
    names = list(shapes)
    plan = Plan(
        {
            n: LayerPlan(Ratio.parse(EDGE), 8)
            if n in (names[0], names[-1])
            else LayerPlan(Ratio.parse(ratio), act_bits)
            for n in names
        }
    )
    cycles = model.cost(shapes, plan, act_bits=act_bits).totals.cycles
    assert cycles is not None
    return cycles


# The two lines of each sensitivity panel: (row key, line style, baseline named in the legend).
SENSITIVITY_LINES = (
    ("model_ratio", "-o", "DSPs alone"),
    ("model_ratio_vs_filled", "--s", "DSPs + LUT MACs"),
)


def plot(path: Path, rows: list[dict[str, Any]], act_bits: int, lut_share: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    left = axes[0][0]
    for device in DEVICES:
        model = FpgaCostModel(device, AcceleratorConfig(lut_share=lut_share))
        base = throughput(model, {"fixed-4": 1.0}, act_bits)
        for budget, style in ((4.0, "-"), (4.2, "--")):
            shares, macs = throughput_curve(
                model, "sp2-4", "fixed-4", "fixed-8", budget, act_bits=act_bits, points=201
            )
            (line,) = left.plot(shares, macs / base, style, label=f"{device}, {budget:g} eq. bits")
            best = derive_ratio(model, ["sp2-4", "fixed-4", "fixed-8"], budget, act_bits=act_bits)
            left.plot(
                best.ratio.to_dict()["sp2-4"],
                best.macs_per_cycle / base,
                "o",
                color=line.get_color(),
            )
    left.axvline(0.6, color="grey", lw=0.8, ls=":")
    left.text(0.61, 1.05, "RMSMP's 60% SP2", fontsize=8, color="grey")
    left.set_xlabel("share of rows in SP2-4 (on the LUT array)")
    left.set_ylabel("peak throughput / fixed-4 on DSPs alone")
    left.set_title(
        f"peak (compute), a{act_bits}, LUT share {lut_share:g}\n"
        "(the two parts' curves coincide: both have 242 LUTs per DSP slice)",
        fontsize=10,
    )
    left.grid(alpha=0.3)
    left.legend(fontsize=8)

    bars = axes[0][1]
    claims = [r for r in rows if r["kind"] == "claim" and r["act_bits"] == act_bits]
    x = np.arange(len(claims))
    series = [
        ("model_ratio_compute_only", "vs DSPs alone, compute only"),
        ("model_ratio", "vs DSPs alone, with DDR"),
        ("model_ratio_vs_filled", "vs DSPs + LUT fixed-4 MACs, with DDR"),
        ("paper_ratio", "paper"),
    ]
    width = 0.2
    for k, (key, label) in enumerate(series):
        bars.bar(x + (k - 1.5) * width, [r[key] for r in claims], width, label=label)
    bars.set_xticks(x, [f"{r['method']}\n{r['device']}" for r in claims], fontsize=8)
    bars.set_ylabel("end-to-end speed-up, ResNet-18")
    bars.set_title("model (both baselines, with and without DDR) against the papers", fontsize=10)
    bars.set_ylim(0, 5)
    bars.axhline(1, color="grey", lw=0.8)
    bars.legend(fontsize=7, loc="upper right")

    panels = [axes[0][2], axes[1][0], axes[1][1], axes[1][2]]
    sens = [r for r in rows if r["kind"] == "sensitivity"]
    for ax, name in zip(panels, SWEEPS, strict=True):
        for device, color in zip(DEVICES, ("C0", "C1"), strict=True):
            pts = [r for r in sens if r["device"] == device and r["assumption"] == name]
            xs = [r["value"] for r in pts]
            for key, style, baseline in SENSITIVITY_LINES:
                ys = [r[key] for r in pts]
                ax.plot(xs, ys, style, color=color, label=f"{device} vs {baseline}")
        ax.axhline(1, color="grey", lw=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel("MSP end-to-end speed-up (with DDR)")
        ax.set_title(f"sensitivity: {name}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    print(f"# {command_line()}")
    torch.set_num_threads(1)
    shapes = measure_layer_shapes(resnet18_imagenet().eval(), torch.zeros(1, 3, 224, 224))
    config = AcceleratorConfig(lut_share=args.lut_share, dsp_packing=args.dsp_packing)
    rows: list[dict[str, Any]] = []
    for act_bits in (4, 8):
        suffix = "" if act_bits == 4 else f"-a{act_bits}"
        for device in DEVICES:
            choices: list[tuple[str, Choice, float]] = [
                ("msp", MSP_CHOICE, MSP_PAPER[device]),
                ("rmsmp", RMSMP_RATIO, RMSMP_PAPER),
                ("rmsmp-derived", (("sp2-4", "fixed-4", "fixed-8"), 4.2), RMSMP_PAPER),
            ]
            for method, choice, paper in choices:
                rows.append(
                    claim_row(
                        method + suffix,
                        device,
                        choice,
                        paper,
                        config,
                        shapes,
                        act_bits,
                        not args.skip_paper_shares,
                    )
                )
    rows += sensitivity_rows(shapes, act_bits=4)
    rows += packing_whatif_rows(act_bits=4)
    rows += packing_rows(shapes, act_bits=4)
    for r in rows:
        if r["kind"] == "claim":
            print(
                f"{r['method']:16s} {r['device']:8s} vs DSPs alone {r['model_ratio']:4.2f}x "
                f"(compute only {r['model_ratio_compute_only']:4.2f}x, peak "
                f"{r['model_peak_ratio']:4.2f}x)  vs DSPs + LUT MACs "
                f"{r['model_ratio_vs_filled']:4.2f}x (compute only "
                f"{r['model_ratio_vs_filled_compute_only']:4.2f}x, peak "
                f"{r['model_peak_ratio_vs_filled']:4.2f}x)  paper {r['paper_ratio']:4.2f}x  "
                f"ratio {r['ratio']}  {r['images_per_s']:.1f} img/s  transfer-bound "
                f"{r['share_of_cycles_transfer_bound']:.0%}"
            )
        elif r["kind"] == "sensitivity":
            print(
                f"  sensitivity msp {r['device']} {r['assumption']}={r['value']:g}: "
                f"{r['model_ratio']:.2f}x vs DSPs alone, {r['model_ratio_vs_filled']:.2f}x vs "
                f"DSPs + LUT MACs (peak {r['model_peak_ratio']:.2f}x / "
                f"{r['model_peak_ratio_vs_filled']:.2f}x)"
            )
        elif r["kind"] == "dsp_packing":
            print(
                f"  dsp_packing={r['dsp_packing']:9s} {r['method']:7s} {r['device']} edges at "
                f"8-bit inputs: {r['images_per_s']:.1f} img/s, {r['model_ratio']:.2f}x fixed-4"
            )
        else:
            print(
                f"  packing what-if {r['method']:5s} {r['device']} 4-bit MACs/DSP baseline "
                f"{r['baseline_dsp_macs_4bit']} mixed {r['dsp_macs_4bit']}: peak "
                f"{r['model_peak_ratio']:.2f}x"
            )
    settings = {
        "model": "resnet18-imagenet",
        "input": [3, 224, 224],
        "batch": 1,
        "act_bits": 4,
        "first_last": EDGE,
        "baselines": {
            "dsp_only": "fixed-4 on the DSP array alone (first and last layer fixed-8)",
            "filled": "fixed-4 on the DSP array plus LUT-built fixed-4 MACs in the same "
            "LUT share (first and last layer fixed-8 on the DSPs)",
        },
        "offchip_memory": "model_ratio*: each layer max(compute, transfer) at the board's "
        "DDR bandwidth when the weights do not fit in BRAM; *_compute_only: without",
        "assumptions": {
            d: [a.to_dict() for a in assumptions(config, load_device(d))] for d in DEVICES
        },
        "bit_budgets": {"msp": 4.0, "rmsmp-derived": 4.2},
        "synthesis": FpgaCostModel(DEVICES[0]).units.tool,
        "figures": "modelled, not measured on hardware",
    }
    path = write_result("fpga_cost", settings, rows, args.output)
    plot(args.output / "fpga_cost.png", rows, 4, args.lut_share)
    print(f"wrote {path} and {args.output / 'fpga_cost.png'}")


if __name__ == "__main__":
    main()
