"""Quantising a fixed model gives the same tensors on 1 and 2 threads.

Float training is what moves with the thread count (its gradient sums are taken in a
thread-dependent order: about 2e-7 per step, 3e-4 in the weights after an epoch of the
demo's model, even with ``torch.use_deterministic_algorithms``); from fixed float weights,
calibration, rounding and the row assignment are exact.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from _tiny import TINY_MODEL
from safetensors.torch import load_file


def test_quantisation_does_not_depend_on_the_thread_count(
    float_weights: Path, tiny_data: Path, tmp_path: Path
) -> None:
    # One fresh process (its thread pool untouched by the tests) quantises on 1, then 2.
    args = [
        "quantize", "--model", TINY_MODEL, "--weights", str(float_weights), "--recipe", "rmsmp",
        "--act-bits", "4", "--data-dir", str(tiny_data), "--calib-images", "40",
        "--batch-size", "20", "-q",
    ]  # fmt: skip
    script = (
        "import sys\nfrom mixq.cli.main import main\n"
        f"for threads in (1, 2):\n"
        f"    code = main({args!r} + ['--threads', str(threads), '-o', "
        f"{str(tmp_path)!r} + f'/t{{threads}}'])\n"
        "    assert code == 0, code\n"
    )
    source = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(source)},
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    one = load_file(tmp_path / "t1" / "quantized.safetensors")
    two = load_file(tmp_path / "t2" / "quantized.safetensors")
    assert one.keys() == two.keys() and len(one) > 10
    different = [name for name in one if not torch.equal(one[name], two[name])]
    assert different == []


def test_threads_option_sets_and_restores_torch_threads(quantized: Path, tiny_data: Path) -> None:
    from mixq.cli.main import main

    seen: list[int] = []
    before = torch.get_num_threads()
    import mixq.cli.eval as eval_command

    original = eval_command.top1

    def spy(*args: object, **kwargs: object) -> float:
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)  # type: ignore[arg-type]

    eval_command.top1 = spy  # type: ignore[assignment]
    try:
        args = [
            "eval",
            str(quantized),
            "--data-dir",
            str(tiny_data),
            "--batch-size",
            "20",
            "--fake-quant",
        ]
        assert main([*args, "--threads", "1", "-q"]) == 0
    finally:
        eval_command.top1 = original  # type: ignore[assignment]
    assert seen == [1] and torch.get_num_threads() == before
