"""Why the variance rule does not help ResNet-20 with round-to-nearest: per-row weight error
of each 4-bit grid on the pretrained ResNet-20 (BN folded), with both clip initialisations.

For every row: squared error under Fixed-4, SP2-4 and PoT-4; which grid is best; and whether
the row's shape statistic var(w)/max(w^2) (low: bell-shaped) predicts SP2's advantage.

    python benchmarks/resnet20_row_errors.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS_DIR, command_line, write_result

import mixq
from mixq.data import default_data_root
from mixq.models import load_pretrained_cifar_resnet, resnet20
from mixq.nn.weight_quant import quantization_errors
from mixq.schemes import Candidate
from mixq.scoring import row_shape

GRIDS = [Candidate.parse(c) for c in ("fixed-4", "sp2-4", "pot-4")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    print(f"# {command_line()}")
    root = args.data_root or default_data_root()
    model = load_pretrained_cifar_resnet(
        resnet20(), root / "resnet-cifar10" / "resnet20-12fca82f.th"
    )
    recipe = mixq.Recipe.preset("fixed8", first_last=None, act_bits=0)
    folded = mixq.quantize(model, recipe, progress=False)  # only to fold BN into the weights
    rows = []
    for scale in ("max", "mse"):
        errors = {c: [] for c in GRIDS}
        shapes = []
        for layer in folded.modules():
            if isinstance(layer, mixq.QuantConv2d | mixq.QuantLinear):
                w = layer.weight_rows().detach()
                for c, e in quantization_errors(w, tuple(GRIDS), scale).items():
                    errors[c].append(e.numpy())
                shapes.append(row_shape(w))
        per_grid = {c: np.concatenate(v) for c, v in errors.items()}
        shape = np.concatenate(shapes)
        fixed, sp2 = per_grid[GRIDS[0]], per_grid[GRIDS[1]]
        bell = shape <= np.median(shape)
        row = {
            "method": f"row-errors-{scale}",
            "scale_method": scale,
            "rows": int(shape.size),
            **{
                f"sq_error_{c.scheme.value}4": round(float(v.sum()), 3) for c, v in per_grid.items()
            },
            "rows_sp2_beats_fixed": int((sp2 < fixed).sum()),
            "rows_sp2_beats_fixed_bell_half": int((sp2 < fixed)[bell].sum()),
            "sp2_to_fixed_error_ratio_bell_half": round(
                float(sp2[bell].sum() / fixed[bell].sum()), 3
            ),
            "sp2_to_fixed_error_ratio_flat_half": round(
                float(sp2[~bell].sum() / fixed[~bell].sum()), 3
            ),
            "spearman_shape_vs_sp2_advantage": round(float(_spearman(shape, fixed - sp2)), 3),
        }
        rows.append(row)
        print(row)
    settings = {"model": "resnet20 pretrained, BN folded", "grids": [str(c) for c in GRIDS]}
    print(f"wrote {write_result('resnet20_row_errors', settings, rows, args.output)}")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
