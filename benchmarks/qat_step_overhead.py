"""Time of one training step (forward, backward, SGD update) of quantised ResNet-20 against
the float model, batch 128, on the CPU. Timings are medians over ``--runs`` steps taken in
alternation (float, quantised, float, ...), so both see the same machine state.

    python benchmarks/qat_step_overhead.py --runs 15
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _common import RESULTS_DIR, command_line, write_result
from torch import nn

import mixq
from mixq.models import resnet20

# (row name, preset, BN statistics frozen)
CONFIGS = [
    ("rmsmp", "rmsmp", True),
    ("rmsmp-bn-batch-stats", "rmsmp", False),
    ("fixed4", "fixed4", True),
    ("rmsmp-a4", "rmsmp", True),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR)
    return parser.parse_args()


def make_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# {command_line()}")
    images = torch.randn(args.batch, 3, 32, 32)
    labels = torch.randint(0, 10, (args.batch,))
    base = resnet20()
    rows = []
    for name, preset, frozen in CONFIGS:
        act_bits = 4 if name.endswith("-a4") else 8
        recipe = mixq.Recipe.preset(preset, act_bits=act_bits)
        quantized = mixq.quantize(base, recipe, calibration_data=[images[:32]], progress=False)
        for module in quantized.modules():
            if isinstance(module, mixq.QuantConv2d):
                module.bn_frozen = frozen
        float_step = make_step(base.train(), images, labels)
        quant_step = make_step(quantized.train(), images, labels)
        for _ in range(2):  # warm-up: allocator and thread pools
            float_step(), quant_step()
        float_times, quant_times = [], []
        for _ in range(args.runs):
            float_times.append(float_step())
            quant_times.append(quant_step())
        float_s, quant_s = statistics.median(float_times), statistics.median(quant_times)
        rows.append(
            {
                "method": name,
                "batch": args.batch,
                "float_step_s": round(float_s, 4),
                "quant_step_s": round(quant_s, 4),
                "step_time_ratio": round(quant_s / float_s, 3),
            }
        )
        print(
            f"{name:<22} float {float_s:.3f} s  quantised {quant_s:.3f} s  "
            f"ratio {quant_s / float_s:.2f}",
            flush=True,
        )
    settings = {
        "runs": args.runs,
        "batch": args.batch,
        "threads": args.threads,
        "model": "resnet20",
        "optimizer": "SGD momentum 0.9",
        "timing": "median of alternating steps, after 2 warm-up steps each",
    }
    print(f"wrote {write_result('qat_step_overhead', settings, rows, args.output)}")


if __name__ == "__main__":
    main()
