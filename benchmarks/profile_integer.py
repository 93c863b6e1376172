"""Where the time goes in the fast integer engine: each operation of the lowered ResNet-20
timed on its own (the fastest of ``--reps`` calls, so that other processes' load shows
less), beside onnxruntime's own profile of its int8 QDQ model (per operator type).

    python benchmarks/profile_integer.py --batch 64 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from _common import add_run_options, start_run, write_result
from integer_engine import BUILDERS, WEIGHTS, export_float_onnx, ort_int8_peer, quantize

import mixq
from mixq.data import cifar10_loader
from mixq.integer.fast import active_isa, lower
from mixq.models import load_pretrained_cifar_resnet


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=list(WEIGHTS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--act-bits", type=int, default=4)
    parser.add_argument("--calib-images", type=int, default=128)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--no-ort", action="store_true", help="skip onnxruntime's profile")
    add_run_options(parser, threads=1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = start_run(args)
    model = load_pretrained_cifar_resnet(
        BUILDERS[args.model](), root / "resnet-cifar10" / WEIGHTS[args.model]
    ).eval()
    calib = list(cifar10_loader(root / "cifar10-jpeg", "train", 64, limit=args.calib_images))
    x = next(iter(cifar10_loader(root / "cifar10-jpeg", "test", args.batch, limit=args.batch)))[0]
    quantized = quantize(model, calib, "rmsmp", args.act_bits)
    fast = lower(mixq.to_integer(quantized, x[:1], engine="reference"))
    rows = node_rows(fast.graph_module, x, args.reps)
    whole = best_time(lambda: fast.forward_integer(x), args.reps)  # one C++ plan
    fast.use_plan = False
    by_node = best_time(lambda: fast.forward_integer(x), args.reps)  # fx, node by node
    fast.use_plan = True
    total = sum(row["ms"] for row in rows)
    for row in sorted(rows, key=lambda r: -r["ms"]):
        print(f"{row['node']:28s} {row['op']:18s} {row['ms']:8.3f} ms {row['ms'] / total:6.1%}")
    print(
        f"sum of ops {total:.3f} ms; whole forward as one plan {whole * 1e3:.3f} ms, node by "
        f"node {by_node * 1e3:.3f} ms (isa {active_isa()})"
    )
    rows.append({"kind": "whole", "engine": "mixq-fast", "ms": round(whole * 1e3, 4)})
    node_by_node = round(by_node * 1e3, 4)
    rows.append({"kind": "whole", "engine": "mixq-fast-node-by-node", "ms": node_by_node})
    if not args.no_ort:
        rows += ort_rows(model, calib, x, args)
    settings = {
        "model": args.model,
        "batch": args.batch,
        "act_bits": args.act_bits,
        "reps": args.reps,
        "isa": active_isa(),
        "load_average": os.getloadavg(),
    }
    print(f"wrote {write_result('profile_integer', settings, rows, args.output)}")


def best_time(call: Any, reps: int) -> float:
    call()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def node_rows(graph_module: fx.GraphModule, x: torch.Tensor, reps: int) -> list[dict[str, Any]]:
    """Each node of the lowered graph timed alone on the inputs the whole run gives it."""
    values: dict[fx.Node, Any] = {}
    modules = dict(graph_module.named_modules())
    rows = []
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            values[node] = x
            continue
        if node.op == "output":
            break
        args = fx.node.map_arg(node.args, lambda n: values[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: values[n])
        if node.op == "call_module":
            module = modules[str(node.target)]
            op = type(module).__name__
            call = lambda m=module, a=args, k=kwargs: m(*a, **k)  # noqa: E731
        elif node.op == "call_function":
            op = getattr(node.target, "__name__", str(node.target))
            call = lambda f=node.target, a=args, k=kwargs: f(*a, **k)  # noqa: E731
        else:
            op = str(node.target)
            call = lambda t=node.target, a=args, k=kwargs: getattr(a[0], t)(*a[1:], **k)  # noqa: E731
        values[node] = call()
        seconds = best_time(call, reps)
        rows.append({"kind": "op", "node": node.name, "op": op, "ms": round(seconds * 1e3, 4)})
    return rows


def ort_rows(
    model: torch.nn.Module, calib: list, x: torch.Tensor, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """onnxruntime's per-operator-type time on its int8 QDQ model (its own profiler)."""
    import onnxruntime as ort

    folder = Path(tempfile.mkdtemp())
    peer = ort_int8_peer(export_float_onnx(model, x[:1], folder / "float.onnx"), calib,
                         folder / "peer.onnx")  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "ort")
    session = ort.InferenceSession(str(peer), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    whole = best_time(lambda: session.run(None, feed), args.reps)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]].append(event["dur"] / 1e3)
    runs = args.reps + 1
    rows = [
        {"kind": "ort_op", "op": op, "ms_per_run_mean": round(sum(d) / runs, 4)}
        for op, d in sorted(per_op.items(), key=lambda kv: -sum(kv[1]))
    ]
    for row in rows:
        print(f"ort {row['op']:24s} {row['ms_per_run_mean']:8.3f} ms per run (mean)")
    print(f"ort int8 whole forward {whole * 1e3:.3f} ms")
    return [*rows, {"kind": "whole", "engine": "ort-int8-peer", "ms": round(whole * 1e3, 4)}]


if __name__ == "__main__":
    main()
