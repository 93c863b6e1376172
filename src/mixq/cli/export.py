"""``mixq export``: a quantised checkpoint as an integer-only artefact.

    mixq export out/quantized.safetensors --format packed      # out/model.packed.safetensors
    mixq export out/quantized.safetensors --format onnx -o deploy/
    mixq export out/quantized.safetensors --format qonnx       # uniform fixed-point only
    mixq export out/quantized.safetensors --format qdq         # QuantizeLinear/DequantizeLinear

``packed``: integer weights at their bit width with per-row codes, dyadic multipliers and
a versioned header (``mixq.export.packed``); ``onnx``: the integer model in standard ONNX
ops that onnxruntime runs with the same integers as mixq's engine; ``qonnx``: FINN's QONNX
(``Quant`` nodes), for models whose every layer is one fixed-point grid; ``qdq``: standard
QDQ ONNX (int8 per-channel weights, 8-bit activations) that onnxruntime fuses into int8
kernels, fast but requantised in float (``mixq.export.qdq``). Writes next to the
checkpoint unless ``--output`` says where.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mixq.cli._common import add_command, add_model_option, load_model
from mixq.errors import CheckpointError
from mixq.integer import to_integer
from mixq.integer.ops import ENGINES

log = logging.getLogger("mixq")
FORMATS = {
    "packed": "model.packed.safetensors",
    "onnx": "model.onnx",
    "qonnx": "model.qonnx.onnx",
    "qdq": "model.qdq.onnx",
}

SUMMARY = (  # the line in `mixq --help`
    "export a quantised checkpoint: packed integers, ONNX, QDQ ONNX or QONNX"
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(subparsers, common, "export", __doc__, help=SUMMARY)
    parser.add_argument("checkpoint", type=Path, help="quantized.safetensors")
    parser.add_argument("--format", choices=sorted(FORMATS), default="packed")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="reference",
        help="the engine a packed model loads onto by default (default %(default)s)",
    )
    add_model_option(parser, required=False)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args.checkpoint, args.model)
    if not loaded.quantized:
        raise CheckpointError(f"{args.checkpoint} holds float weights; export needs mixq quantize")
    out = Path(args.output) if args.output is not None else args.checkpoint.parent
    out.mkdir(parents=True, exist_ok=True)
    path = out / FORMATS[args.format]
    example = loaded.spec.example_input()
    if args.format == "qonnx":
        from mixq.export.qonnx import export_qonnx

        export_qonnx(loaded.model, example, path)
    elif args.format == "qdq":
        from mixq.export.qdq import export_qdq

        export_qdq(loaded.model, example, path)
    else:
        integer = to_integer(loaded.model, example, engine=args.engine)
        if args.format == "packed":
            from mixq.export.packed import save_packed

            save_packed(integer, path)
        else:
            from mixq.export.onnx_integer import export_onnx

            export_onnx(integer, example, path)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1024:.1f} KiB, {args.format})")
    return 0
