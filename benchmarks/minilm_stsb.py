"""all-MiniLM-L6-v2 on STS-B dev (Spearman of cosine similarities), every method, before
and after distillation of the float model's sentence embeddings.

Every nn.Linear of the encoder is quantised (weights per row) with 8-bit inputs;
embeddings and LayerNorm stay float. W4-equivalent rows: Fixed-4, SP2-4, MSP (50:50),
RMSMP (60:35:5 with Fixed-8); ``-w3`` rows do the same at 3 bits. Each quantised model is
calibrated on STS-B training sentences (PTQ with GPTQ rounding: ``spearman_ptq``), then
distilled on the STS-B training sentences (``spearman``).

    HF_HUB_OFFLINE=1 python benchmarks/minilm_stsb.py --threads 1 \
        --distill-sentences 1024 --epochs 1
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import add_run_options, start_run, write_result

import mixq
from mixq.data.stsb import load_stsb, sentence_batches, spearman_of_cosines
from mixq.models.sentence_encoder import embed, load_minilm
from mixq.train import TrainConfig, train

METHODS = {
    "fixed4": "fixed-4",
    "sp2-4": "sp2-4",
    "msp": "sp2-4:0.5,fixed-4:0.5",
    "rmsmp": "sp2-4:0.6,fixed-4:0.35,fixed-8:0.05",
    "fixed4-w3": "fixed-3",
    "sp2-4-w3": "sp2-3",
    "msp-w3": "sp2-3:0.5,fixed-3:0.5",
    "rmsmp-w3": "sp2-3:0.6,fixed-3:0.35,fixed-8:0.05",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--distill-sentences", type=int, default=4000)
    parser.add_argument("--calib-sentences", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    add_run_options(parser, threads=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = start_run(args)
    encoder, tokenizer = load_minilm()
    dev = load_stsb(root / "sts-b" / "dev.tsv")
    sentences = load_stsb(root / "sts-b" / "train.tsv").sentences()
    calib = sentence_batches(tokenizer, sentences[: args.calib_sentences], args.batch)
    distill = sentence_batches(tokenizer, sentences[: args.distill_sentences], args.batch)

    def spearman(model: torch.nn.Module) -> float:
        first = embed(model, tokenizer, dev.first)
        second = embed(model, tokenizer, dev.second)
        return round(spearman_of_cosines(first, second, dev.scores), 4)

    rows = [
        {"method": "fp32", "eq_bits": 32.0, "spearman": spearman(encoder), "spearman_ptq": None}
    ]
    config = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        optimizer="adamw",
        weight_decay=0.0,
        warmup_epochs=0.1,
        distill="outputs",
        task_weight=0.0,
        distill_weight=1000.0,
        grad_clip=1.0,
    )
    settings = {
        "act_bits": 8,
        "model": "all-MiniLM-L6-v2",
        "dev_pairs": len(dev.scores),
        "calibration_sentences": args.calib_sentences,
        "distill_sentences": min(args.distill_sentences, len(sentences)),
        "distill": config.to_dict(),
        "quantised": "every nn.Linear; embeddings and LayerNorm float",
        "first_last": "same ratio as every layer",
    }
    print(rows[-1], flush=True)
    write_result("minilm_stsb", settings, rows, args.output)  # partial results as it goes
    for method in args.methods:
        recipe = mixq.Recipe(mixq.LayerConfig(mixq.Ratio.parse(METHODS[method]), act_bits=8))
        start = time.perf_counter()
        model = mixq.quantize(
            encoder, recipe, calibration_data=calib, calibration_batches=len(calib)
        )
        ptq = spearman(model)
        ptq_s = time.perf_counter() - start
        train(model, distill, config, teacher=encoder)
        summary = mixq.describe(model)
        rows.append(
            {
                "method": method,
                "eq_bits": round(summary.eq_bits, 3),
                "spearman": spearman(model),
                "spearman_ptq": ptq,
                "weight_kib": round(summary.weight_kib, 1),
                "quantised_layers": len(summary.layers),
                "ptq_s": round(ptq_s),
                "wall_s": round(time.perf_counter() - start),
            }
        )
        print(rows[-1], flush=True)
        write_result("minilm_stsb", settings, rows, args.output)
    print(f"wrote {write_result('minilm_stsb', settings, rows, args.output)}")


if __name__ == "__main__":
    main()
