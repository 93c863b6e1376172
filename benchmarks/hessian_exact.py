"""Exact Gauss-Newton traces against Hutchinson estimates on the pretrained ResNet-20.

On one fixed batch of training images (the setting of ``sensitivity_cost``): the exact
per-layer and per-row traces from per-sample Jacobians (``mixq.sensitivity.
gauss_newton_traces``), with the check that each layer's Hessian block is its
Gauss-Newton block; then vectorised Hutchinson per-layer probing until every layer's
relative standard error is under the tolerance (the cap is raised so that every layer
reaches it), timed in the same run; then each layer's Hutchinson estimate against the
exact trace in units of its standard error. Last, the exact traces over more images
(several batches), to show the cost grows linearly with the data.

    python benchmarks/hessian_exact.py
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from _common import add_run_options, start_run, write_result

from mixq.data import cifar10_loader
from mixq.models import load_pretrained_cifar_resnet, resnet20
from mixq.sensitivity import (
    HutchinsonConfig,
    SensitivityTable,
    gauss_newton_traces,
    hutchinson_traces,
)

NAME = "hessian_exact"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--max-probes", type=int, default=400, help="Hutchinson cap per layer")
    parser.add_argument("--probes-per-product", type=int, default=8)
    parser.add_argument("--more-images", type=int, default=1024, help="exact traces, last row")
    parser.add_argument("--skip-hutchinson", action="store_true")
    add_run_options(parser, threads=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = start_run(args)
    weights = root / "resnet-cifar10" / "resnet20-12fca82f.th"
    model = load_pretrained_cifar_resnet(resnet20(), weights)
    images = root / "cifar10-jpeg"
    fixed = list(cifar10_loader(images, "train", args.batch_size, limit=args.batch_size))
    settings = {
        "model": "resnet20 (pretrained, BN folded)",
        "batch_size": args.batch_size,
        "tolerance": args.tolerance,
        "hutchinson_max_probes": args.max_probes,
        "probes_per_product": args.probes_per_product,
        "threads": args.threads,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "note": "single timed runs; the load average is recorded beside each",
    }
    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        print(_format(row), flush=True)
        write_result(NAME, settings, rows, args.output)

    # Warm-up: the first torch.func calls pay one-off costs that are not the method's.
    gauss_newton_traces(model, fixed, layers=["linear"], progress=False)
    exact = _timed(lambda: gauss_newton_traces(model, fixed, model_name="resnet20"))
    record(_row("gauss-newton", "fixed batch", exact))
    if not args.skip_hutchinson:
        config = HutchinsonConfig(
            tolerance=args.tolerance,
            min_probes=8,
            max_probes=args.max_probes,
            probes_per_product=args.probes_per_product,
        )
        estimate = _timed(lambda: hutchinson_traces(model, fixed, config, model_name="resnet20"))
        record(
            {
                **_row("hutchinson-layer", "fixed batch", estimate),
                **_agreement(estimate[0], exact[0]),
            }
        )
    more = list(cifar10_loader(images, "train", args.batch_size, limit=args.more_images))
    record(_row("gauss-newton", f"{args.more_images} images", _timed(
        lambda: gauss_newton_traces(model, more, model_name="resnet20")
    )))  # fmt: skip
    settings["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"wrote {write_result(NAME, settings, rows, args.output)}")


def _timed(run: Any) -> tuple[SensitivityTable, list[float]]:
    before = round(os.getloadavg()[0], 2)
    table = run()
    return table, [before, round(os.getloadavg()[0], 2)]


def _row(method: str, data: str, timed: tuple[SensitivityTable, list[float]]) -> dict[str, Any]:
    table, load = timed
    run = table.run
    return {
        "method": method,
        "data": data,
        "samples": run.samples,
        "trace_s": round(run.seconds, 2),
        "hvp_count": run.hvp_count,
        "max_probes_used": run.probes,
        "converged": run.converged,
        "max_rel_stderr": round(run.max_rel_stderr, 4),
        "hessian_gap": run.hessian_gap,
        "load_average_before_after": load,
        "per_layer": {name: round(layer.trace, 4) for name, layer in table.layers.items()},
    }


def _agreement(estimate: SensitivityTable, exact: SensitivityTable) -> dict[str, Any]:
    """Each layer's (Hutchinson - exact) / Hutchinson's standard error."""
    z = {
        name: (layer.trace - exact.layer(name).trace) / layer.trace_stderr
        for name, layer in estimate.layers.items()
    }
    return {
        "z_vs_exact": {name: round(value, 2) for name, value in z.items()},
        "layers_within_2_se": sum(abs(v) <= 2 for v in z.values()),
        "max_abs_z": round(max(abs(v) for v in z.values()), 2),
    }


def _format(row: dict[str, Any]) -> str:
    text = f"{row['method']:<17} {row['data']:<12} {row['trace_s']:>8.1f} s"
    text += f"  {row['hvp_count']} HVPs  max rel s.e. {row['max_rel_stderr']:.1%}"
    if row.get("hessian_gap") is not None:
        text += f"  Hessian gap {row['hessian_gap']:.1e}"
    if "max_abs_z" in row:
        text += f"  |z| max {row['max_abs_z']}, {row['layers_within_2_se']} layers within 2 s.e."
    return text


if __name__ == "__main__":
    main()
