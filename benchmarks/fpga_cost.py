"""The FPGA model's throughput ratios beside the ones MSP and RMSMP report.

MSP reports about 2x and 4x throughput over using DSPs alone on two Zynq-7000 parts
(XC7Z020, XC7Z045); RMSMP reports 3.65x end-to-end for ResNet-18 on ImageNet against
4-bit fixed-point. With ResNet-18's layer shapes (224x224) measured here, every ratio is
recomputed from the device files and the synthesised unit costs; nothing is fitted to
the papers. Each claim row also carries the sensitivity that explains the gap (see
docs/hardware.md).

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
    FpgaCostModel,
    derive_ratio,
    load_device,
    mac_loads,
    throughput,
    throughput_curve,
    uniform_plan,
)
from mixq.models.resnet_imagenet import resnet18_imagenet
from mixq.plan import LayerShape
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lut-share", type=float, default=AcceleratorConfig.lut_share)
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


def claim_row(
    method: str,
    device: str,
    choice: Choice,
    paper: float,
    model: FpgaCostModel,
    shapes: dict[str, LayerShape],
    act_bits: int,
) -> dict[str, Any]:
    """Speed-up over fixed-4 on DSPs alone, end to end on ResNet-18 and at peak."""
    shares = shares_for(model, choice, act_bits)
    ratio = ratio_text(shares)
    base = {edge: end_to_end(model, shapes, "fixed-4", act_bits, edge) for edge in (True, False)}
    mine = {edge: end_to_end(model, shapes, ratio, act_bits, edge) for edge in (True, False)}
    loads = {r: round(v, 4) for r, v in mac_loads(model, shares, act_bits).items()}
    clock = model.device.clock_mhz * 1e6
    return {
        "kind": "claim",
        "method": method,
        "device": device,
        "act_bits": act_bits,
        "ratio": {c: round(s, 4) for c, s in shares.items()},
        "model_ratio": round(base[True] / mine[True], 3),
        "paper_ratio": paper,
        "model_ratio_all_layers_mixed": round(base[False] / mine[False], 3),
        "model_peak_ratio": round(speedup(model, shares, act_bits), 3),
        "binding": [r for r, v in loads.items() if v >= max(loads.values()) * (1 - 1e-6)],
        "latency_ms": round(mine[True] / clock * 1e3, 3),
        "baseline_latency_ms": round(base[True] / clock * 1e3, 3),
        "dsp_bound_ceiling": round(_dsp_ceiling(model, shares), 3),
        "lut_share_for_paper_peak": _lut_share_for(paper, device, choice, act_bits),
    }


def _dsp_ceiling(model: FpgaCostModel, shares: dict[str, float]) -> float:
    """The speed-up if the LUT array were infinite: the DSP array alone sets the pace."""
    p4 = model.device.macs_per_dsp(4)
    dsp_time = sum(
        s * p4 / model.device.macs_per_dsp(Candidate.parse(c).bits)
        for c, s in shares.items()
        if model.on_dsp(Candidate.parse(c))
    )
    return 1.0 / dsp_time if dsp_time else float("inf")


def _lut_share_for(paper: float, device: str, choice: Choice, act_bits: int) -> float | None:
    """The LUT share at which the peak speed-up equals the paper's (None if none does);
    a derived ratio is derived again at each share."""

    def gain(share: float) -> float:
        model = FpgaCostModel(device, AcceleratorConfig(lut_share=share))
        return speedup(model, shares_for(model, choice, act_bits), act_bits)

    low, high = 0.05, 1.0
    if not gain(low) <= paper <= gain(high):
        return None
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (mid, high) if gain(mid) < paper else (low, mid)
    return round((low + high) / 2, 3)


def sensitivity_rows(act_bits: int) -> list[dict[str, Any]]:
    """Peak speed-ups against the two design assumptions: the LUT share the MAC arrays take,
    and how many 4-bit MACs a DSP slice does, in the baseline and in the mixed design."""
    rows = []
    for device_name in DEVICES:
        device = load_device(device_name)
        packings = {p: dataclasses.replace(device, dsp_packing={4: p, 8: 1}) for p in (1, 2)}
        for packing in (2, 1):
            for share in LUT_SHARES:
                model = FpgaCostModel(packings[packing], AcceleratorConfig(lut_share=share))
                shares = shares_for(model, (("sp2-4", "fixed-4"), 4.0), act_bits)
                rows.append(
                    _sensitivity(
                        "msp",
                        device_name,
                        act_bits,
                        share,
                        packing,
                        packing,
                        shares,
                        speedup(model, shares, act_bits),
                    )
                )
        for base_packing, packing in ((2, 2), (1, 1), (1, 2)):
            config = AcceleratorConfig()
            model = FpgaCostModel(packings[packing], config)
            baseline = FpgaCostModel(packings[base_packing], config)
            rows.append(
                _sensitivity(
                    "rmsmp",
                    device_name,
                    act_bits,
                    config.lut_share,
                    base_packing,
                    packing,
                    RMSMP_RATIO,
                    speedup(model, RMSMP_RATIO, act_bits, baseline),
                )
            )
    return rows


def _sensitivity(
    method: str,
    device: str,
    act_bits: int,
    share: float,
    base_packing: int,
    packing: int,
    shares: dict[str, float],
    gain: float,
) -> dict[str, Any]:
    return {
        "kind": "sensitivity",
        "method": method,
        "device": device,
        "act_bits": act_bits,
        "lut_share": share,
        "baseline_dsp_macs_4bit": base_packing,
        "dsp_macs_4bit": packing,
        "ratio": {c: round(s, 4) for c, s in shares.items()},
        "model_peak_ratio": round(gain, 3),
    }


def plot(path: Path, rows: list[dict[str, Any]], act_bits: int, lut_share: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for device in DEVICES:
        model = FpgaCostModel(device, AcceleratorConfig(lut_share=lut_share))
        base = throughput(model, {"fixed-4": 1.0}, act_bits)
        for budget, style in ((4.0, "-"), (4.2, "--")):
            shares, macs = throughput_curve(
                model, "sp2-4", "fixed-4", "fixed-8", budget, act_bits=act_bits, points=201
            )
            label = f"{device}, {budget:g} eq. bits"
            (line,) = left.plot(shares, macs / base, style, label=label)
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
    left.set_ylabel("throughput / fixed-4 on DSPs alone")
    left.set_title(
        f"peak throughput, a{act_bits}, LUT share {lut_share:g}\n"
        "(the two parts' curves coincide: both have 242 LUTs per DSP slice)",
        fontsize=10,
    )
    left.grid(alpha=0.3)
    left.legend(fontsize=8)

    claims = [r for r in rows if r["kind"] == "claim" and r["act_bits"] == act_bits]
    x = np.arange(len(claims))
    right.bar(
        x - 0.27, [r["model_ratio"] for r in claims], 0.27, label="model, ResNet-18 end to end"
    )
    right.bar(x, [r["model_peak_ratio"] for r in claims], 0.27, label="model, peak")
    right.bar(x + 0.27, [r["paper_ratio"] for r in claims], 0.27, label="paper")
    right.set_xticks(x, [f"{r['method']}\n{r['device']}" for r in claims], fontsize=8)
    right.set_ylabel("speed-up over fixed-4 on DSPs alone")
    right.set_title("model against the papers")
    right.set_ylim(0, 5)
    right.legend(fontsize=8, loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    print(f"# {command_line()}")
    torch.set_num_threads(1)
    shapes = measure_layer_shapes(resnet18_imagenet().eval(), torch.zeros(1, 3, 224, 224))
    config = AcceleratorConfig(lut_share=args.lut_share)
    rows: list[dict[str, Any]] = []
    for act_bits in (4, 8):
        suffix = "" if act_bits == 4 else f"-a{act_bits}"
        for device in DEVICES:
            model = FpgaCostModel(device, config)
            choices: list[tuple[str, Choice, float]] = [
                ("msp", (("sp2-4", "fixed-4"), 4.0), MSP_PAPER[device]),
                ("rmsmp", RMSMP_RATIO, RMSMP_PAPER),
                ("rmsmp-derived", (("sp2-4", "fixed-4", "fixed-8"), 4.2), RMSMP_PAPER),
            ]
            for method, choice, paper in choices:
                rows.append(
                    claim_row(method + suffix, device, choice, paper, model, shapes, act_bits)
                )
    rows += sensitivity_rows(act_bits=4)
    for r in rows:
        if r["kind"] == "claim":
            print(
                f"{r['method']:16s} {r['device']:8s} model {r['model_ratio']:5.2f}x "
                f"(peak {r['model_peak_ratio']:4.2f}x, all layers mixed "
                f"{r['model_ratio_all_layers_mixed']:4.2f}x)  paper {r['paper_ratio']:4.2f}x  "
                f"ratio {r['ratio']}  binding {r['binding']}  "
                f"LUT share for paper {r['lut_share_for_paper_peak']}"
            )
        else:
            print(
                f"  sensitivity {r['method']:6s} {r['device']} lut_share {r['lut_share']:.1f} "
                f"4-bit MACs/DSP baseline {r['baseline_dsp_macs_4bit']} mixed "
                f"{r['dsp_macs_4bit']}: peak {r['model_peak_ratio']:.2f}x at {r['ratio']}"
            )
    settings = {
        "model": "resnet18-imagenet",
        "input": [3, 224, 224],
        "act_bits": 4,
        "lut_share": args.lut_share,
        "dsp_share": config.dsp_share,
        "first_last": EDGE,
        "baseline": "fixed-4 on the DSP array alone (first and last layer fixed-8)",
        "bit_budgets": {"msp": 4.0, "rmsmp-derived": 4.2},
        "synthesis": FpgaCostModel(DEVICES[0]).units.tool,
    }
    path = write_result("fpga_cost", settings, rows, args.output)
    plot(args.output / "fpga_cost.png", rows, 4, args.lut_share)
    print(f"wrote {path} and {args.output / 'fpga_cost.png'}")


if __name__ == "__main__":
    main()
