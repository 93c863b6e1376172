"""Peak memory of quantising, measuring the sensitivity of and fine-tuning a BERT-base-sized
encoder (12 layers, hidden 768, random weights), against the float model's own training step.

Each stage runs in a fresh process so that its peak resident memory (``ru_maxrss``) is its
own; ``baseline_bytes`` is the process right after building the float model.

    python benchmarks/bert_base_memory.py --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import torch
from _common import add_run_options, command_line, write_result
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

STAGES = ("float-step", "quantize", "sensitivity", "qat-step")


class SequenceClassifier(nn.Module):
    """BERT encoder, mean pooling and a linear head over token ids (tensor in, logits out),
    so that calibration, the Hessian pass and training take plain tensor batches."""

    def __init__(self, layers: int, hidden: int, classes: int = 2) -> None:
        super().__init__()
        import transformers

        config = transformers.BertConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=hidden // 64,
            intermediate_size=4 * hidden,
        )
        self.bert = transformers.BertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(hidden, classes)

    def forward(self, input_ids: Tensor) -> Tensor:
        hidden = self.bert(input_ids=input_ids).last_hidden_state
        return self.head(hidden.mean(dim=1))


def batches(count: int, batch: int, length: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(1000, 30000, (batch, length), generator=generator),
            torch.randint(0, 2, (batch,), generator=generator),
        )
        for _ in range(count)
    ]


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_stage(stage: str, args: argparse.Namespace) -> dict[str, Any]:
    import mixq
    from mixq.sensitivity.config import HutchinsonConfig
    from mixq.sensitivity.hutchinson import hutchinson_traces
    from mixq.train import TrainConfig, train

    torch.manual_seed(0)
    model = SequenceClassifier(args.layers, args.hidden).eval()
    baseline = peak_bytes()
    data = batches(args.batches, args.batch, args.length, seed=1)
    start = time.perf_counter()
    if stage == "float-step":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        model.train()
        inputs, targets = data[0]
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    elif stage == "quantize":
        mixq.quantize(
            model, "rmsmp", calibration_data=[x for x, _ in data], calibration_batches=len(data)
        )
    elif stage == "sensitivity":
        # The fused CPU attention kernel has neither forward-mode AD nor a double backward
        # (torch 2.13); the math kernel has both.
        config = HutchinsonConfig(min_probes=2, max_probes=2)
        with sdpa_kernel(SDPBackend.MATH):
            hutchinson_traces(model, data[:1], config, progress=False)
    elif stage == "qat-step":
        # Nearest rounding: GPTQ's own peak is the quantize row; this row is the training step.
        recipe = dataclasses.replace(mixq.Recipe.preset("rmsmp"), weight_rounding="nearest")
        qmodel = mixq.quantize(
            model,
            recipe,
            calibration_data=[x for x, _ in data],
            calibration_batches=len(data),
            progress=False,
        )
        config = TrainConfig(epochs=1, lr=1e-5, optimizer="adamw", weight_decay=0.0)
        train(qmodel, data[:1], config, progress=False)
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    return {
        "task": stage,
        "wall_s": round(time.perf_counter() - start, 1),
        "baseline_bytes": baseline,
        "peak_bytes": peak_bytes(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=STAGES, help="run one stage in this process")
    parser.add_argument("--stages", nargs="*", default=list(STAGES))
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4, help="calibration batches")
    add_run_options(parser, threads=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.stage is not None:
        print(json.dumps(run_stage(args.stage, args)), flush=True)
        return
    print(f"# {command_line()}", flush=True)
    rows: list[dict[str, Any]] = []
    forwarded = [a for a in sys.argv[1:] if not a.startswith("--stages")]
    for stage in args.stages:
        child = [sys.executable, sys.argv[0], *forwarded, "--stage", stage]
        done = subprocess.run(child, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"stage {stage} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(
            f"{stage:12s} {row['wall_s']:7.1f} s  peak {row['peak_bytes'] / 2**30:5.2f} GiB",
            flush=True,
        )
        # Each finished stage is kept: the slow stages take tens of minutes on 2 cores.
        path = write_result("bert_base_memory", _settings(args, rows), _relative(rows), args.output)
    print(f"wrote {path}")


def _relative(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    float_peak = next((r["peak_bytes"] for r in rows if r["task"] == "float-step"), None)
    return [
        {**r, "peak_vs_float_step": round(r["peak_bytes"] / float_peak, 2) if float_peak else None}
        for r in rows
    ]


def _settings(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": f"BERT encoder, {args.layers} layers, hidden {args.hidden}, random weights",
        "sequence_length": args.length,
        "batch": args.batch,
        "calibration_batches": args.batches,
        "preset": "rmsmp (SP2-4:Fixed-4:Fixed-8 = 60:35:5), A8; GPTQ in quantize, nearest "
        "rounding before the QAT step",
        "sensitivity": "Hutchinson per layer, 2 probes on one batch (computed 8 per vmap "
        "product, the default), math attention kernel",
        "memory": "ru_maxrss of a fresh process per stage",
        "complete": len(rows) == len(args.stages),
        "load_avg": os.getloadavg(),
    }


if __name__ == "__main__":
    main()
