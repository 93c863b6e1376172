"""QAT epoch time and Hessian pass time of ResNet-20 on 1 and 2 processes under torchrun.

    nohup nice -n 10 python benchmarks/distributed.py > distributed.log 2>&1 &

Each configuration runs in fresh processes: one plain Python process, or
``python -m torch.distributed.run --standalone --nproc_per_node=2`` (torchrun) starting
two, which share the same number of CPU threads in all (``--threads``, split evenly), so
on a 2-core machine "2 processes" means two one-thread processes against one two-thread
process (and a one-thread process for the per-core view).

- ``qat_epoch``: one epoch of :func:`mixq.train.train` (logit distillation from the float
  model, as the QAT benchmarks train) of the pretrained ResNet-20 quantised with
  ``--preset``, on a class-balanced subset of ``--train-images`` CIFAR-10 JPEG training
  images with augmentation; the global batch is ``--batch`` (per process: batch / N), so
  every configuration takes the same number of steps. ``wall_s`` is the epoch's own time
  (rank 0's ``EpochRecord.seconds``: not the start-up, the model load or the DDP wrap).
- ``hessian``: :func:`mixq.sensitivity.hutchinson_traces` of the pretrained float
  ResNet-20 on one fixed batch of ``--hessian-images`` images, ``--probes`` probes per
  layer on every layer (the stopping rule cannot stop earlier: min = max), computed
  ``--probes`` at a time; under torchrun each rank computes half of each product's probes.
  ``wall_s`` is the table's ``run.seconds``; the rows also say how far the 2-process table
  is from the 1-process one.

``peak_bytes`` is the largest peak resident set size of the processes (``ru_maxrss``:
PyTorch's libraries included, about 0.3 GiB of it); ``peak_bytes_all`` sums it over them.
Every row records the load average before and after it, since other jobs share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS_DIR, add_run_options, resnet20_qat_config, start_run, write_result

import mixq
from mixq.checkpoint import load_quantized, save_quantized
from mixq.data import cifar10_loader, default_data_root
from mixq.distributed_env import gather_objects, process_group
from mixq.models import load_pretrained_cifar_resnet, resnet20
from mixq.sensitivity import HutchinsonConfig, SensitivityTable, hutchinson_traces
from mixq.train import train

SCRIPT = Path(__file__).resolve()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(parser)
    parser.add_argument("--train-images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=128, help="global batch of the QAT epoch")
    parser.add_argument("--preset", default="rmsmp")
    parser.add_argument("--hessian-images", type=int, default=64)
    parser.add_argument("--probes", type=int, default=8, help="per layer, for the Hessian pass")
    parser.add_argument("--tasks", default="qat_epoch,hessian")
    # (processes, threads per process) of each configuration, in the order they run
    parser.add_argument("--configs", default="1x2,2x1,1x1")
    parser.add_argument("--worker", choices=["qat_epoch", "hessian"], help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker is not None:
        worker(args)
        return
    data_root = start_run(args)
    configs = [tuple(int(n) for n in c.split("x")) for c in args.configs.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mixq-distributed-") as work:
        work_dir = Path(work)
        prepare_quantized(args, data_root, work_dir)
        for task in args.tasks.split(","):
            for processes, threads in configs:
                rows.append(run_config(args, task, processes, threads, work_dir))
                if task == "hessian" and processes > 1 and (work_dir / "table-1.json").exists():
                    rows[-1] |= compare_tables(work_dir, processes)
                print(json.dumps(rows[-1]), flush=True)
                write(args, rows)  # kept after each row
    add_scaling(rows)
    path = write(args, rows)
    print(f"wrote {path}")


def prepare_quantized(args: argparse.Namespace, data_root: Path, work_dir: Path) -> None:
    """Quantise once (its cost is not what is measured); the workers load the file."""
    model = load_pretrained_cifar_resnet(resnet20(), weights_path(data_root))
    images = cifar10_loader(data_root / "cifar10-jpeg", "train", 128, limit=256, seed=0)
    quantized = mixq.quantize(model, args.preset, calibration_data=images, progress=False)
    save_quantized(quantized, work_dir / "quantized.safetensors")


def run_config(
    args: argparse.Namespace, task: str, processes: int, threads: int, work_dir: Path
) -> dict[str, Any]:
    part = work_dir / f"{task}-{processes}x{threads}.json"
    passed = ["--train-images", str(args.train_images), "--batch", str(args.batch)]
    passed += ["--preset", args.preset, "--hessian-images", str(args.hessian_images)]
    passed += ["--probes", str(args.probes), "--threads", str(threads)]
    if args.data_root is not None:
        passed += ["--data-root", str(args.data_root)]
    worker_args = [str(SCRIPT), "--worker", task, "--work-dir", str(work_dir), "--part", str(part)]
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc_per_node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load_before = os.getloadavg()
    subprocess.run([*launcher, *worker_args, *passed], check=True, env=env)
    result = json.loads(part.read_text())
    return {
        "task": task,
        "processes": processes,
        "threads_per_process": threads,
        **result,
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    data_root = args.data_root or default_data_root()
    with process_group("cpu") as ranks:
        if args.worker == "qat_epoch":
            result = qat_epoch(args, data_root, ranks.world)
        else:
            result = hessian(args, data_root)
        peaks = gather_objects(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        if ranks.is_main:
            result |= {"peak_bytes": max(peaks), "peak_bytes_all": sum(peaks)}
            args.part.write_text(json.dumps(result))


def qat_epoch(args: argparse.Namespace, data_root: Path, world: int) -> dict[str, Any]:
    model = load_quantized(resnet20(), args.work_dir / "quantized.safetensors")
    teacher = load_pretrained_cifar_resnet(resnet20(), weights_path(data_root))
    per_process = args.batch // world
    loader = cifar10_loader(
        data_root / "cifar10-jpeg",
        "train",
        per_process,
        train_augment=True,
        shuffle=True,
        limit=args.train_images,
        seed=0,
    )
    start = time.perf_counter()
    result = train(model, loader, resnet20_qat_config(1), teacher=teacher, progress=False)
    record = result.history[0]
    return {
        "wall_s": round(record.seconds, 3),
        "train_call_s": round(time.perf_counter() - start, 3),
        "steps": -(-args.train_images // args.batch),
        "batch_per_process": per_process,
        "train_loss": record.train_loss,
    }


def hessian(args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    model = load_pretrained_cifar_resnet(resnet20(), weights_path(data_root))
    batches = list(
        cifar10_loader(
            data_root / "cifar10-jpeg",
            "train",
            args.hessian_images,
            limit=args.hessian_images,
            seed=0,
        )
    )
    config = HutchinsonConfig(
        min_probes=args.probes, max_probes=args.probes, probes_per_product=args.probes
    )
    table = hutchinson_traces(model, batches, config, progress=False)
    table.save(args.work_dir / f"table-{os.environ.get('WORLD_SIZE', '1')}.json")
    return {
        "wall_s": round(table.run.seconds, 3),
        "hvp_count": table.run.hvp_count,
        "layers": len(table.layers),
    }


def add_scaling(rows: list[dict[str, Any]]) -> None:
    """Each row's speed-up over the 1-process row of its task with one thread, and over
    the 1-process row with as many threads in all (when those rows were run)."""
    for row in rows:
        row["threads_in_all"] = row["processes"] * row["threads_per_process"]
    for row in rows:
        singles = {
            r["threads_per_process"]: r
            for r in rows
            if r["task"] == row["task"] and r["processes"] == 1
        }
        if 1 in singles:
            row["speedup_vs_1_process_1_thread"] = round(singles[1]["wall_s"] / row["wall_s"], 3)
        same = singles.get(row["threads_in_all"])
        if same is not None:
            row["speedup_vs_1_process_same_threads"] = round(same["wall_s"] / row["wall_s"], 3)


def weights_path(data_root: Path) -> Path:
    return data_root / "resnet-cifar10" / "resnet20-12fca82f.th"


def write(args: argparse.Namespace, rows: list[dict[str, Any]]) -> Path:
    settings = {
        "train_images": args.train_images,
        "train_subset": "class-balanced (seed 0), CIFAR-10 JPEG train.tar",
        "global_batch": args.batch,
        "preset": args.preset,
        "qat_config": resnet20_qat_config(1).to_dict(),
        "hessian_images": args.hessian_images,
        "probes_per_layer": args.probes,
        "threads_in_all": "processes x threads_per_process",
        "cpus": os.cpu_count(),
        "peak_bytes": "max over processes of ru_maxrss (resident set, libraries included)",
    }
    return write_result("distributed", settings, rows, args.output or RESULTS_DIR)


def compare_tables(work_dir: Path, processes: int) -> dict[str, Any]:
    """How far the N-process table is from the 1-process one (the same probes)."""
    one = SensitivityTable.load(work_dir / "table-1.json")
    many = SensitivityTable.load(work_dir / f"table-{processes}.json")
    worst = max(
        abs(many.layer(n).trace - layer.trace) / abs(layer.trace) for n, layer in one.layers.items()
    )
    same_probes = all(many.layer(n).probes == layer.probes for n, layer in one.layers.items())
    return {"max_relative_trace_difference_vs_1_process": worst, "same_probe_counts": same_probes}


if __name__ == "__main__":
    main()
