"""Compiling and loading the fused C++ kernels (``csrc/``): JIT through
``torch.utils.cpp_extension.load`` on first use, cached in torch's extensions folder, so a
second process loads the built library in well under a second.

The library is compiled for baseline x86-64; each kernel names its instruction set
(AVX512-VNNI, AVX2) in a target attribute and the fastest one this CPU has is chosen at
run time. ``MIXQ_FAST_ISA=scalar|avx2|vnni`` forces one (tests run all three).
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from types import ModuleType

from mixq.errors import FastEngineUnavailableError

SOURCES = ("ops.cpp", "gemm.cpp", "plan.cpp")
ISAS = {"scalar": 0, "avx2": 1, "vnni": 2}
"""Instruction-set names and the codes the kernels take."""
_CSRC = Path(__file__).resolve().parent / "csrc"


@functools.cache
def kernels() -> ModuleType:
    """The compiled kernel module (built on the first call of a machine, then cached).

    Raises :class:`~mixq.errors.FastEngineUnavailableError` where no C++ compiler or build
    tool exists or the build fails, before any model is touched.
    """
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        raise FastEngineUnavailableError("no C++ compiler (c++ or $CXX) to build the fast kernels")
    try:
        from torch.utils import cpp_extension

        if not cpp_extension.is_ninja_available():
            raise FastEngineUnavailableError("ninja is needed to build the fast kernels")
        module = cpp_extension.load(
            name="mixq_fast_kernels_v6",
            sources=[str(_CSRC / name) for name in SOURCES],
            # Without -fopenmp, ATen's header-only parallel_for compiles to a serial loop;
            # the link resolves libgomp to the copy torch itself loaded (same soname), so
            # torch.set_num_threads governs the kernels too.
            extra_cflags=["-O3", "-std=c++17", "-fno-fast-math", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except FastEngineUnavailableError:
        raise
    except Exception as exc:  # a compiler or linker failure surfaces as many types
        raise FastEngineUnavailableError(f"building the fast kernels failed: {exc}") from exc
    _apply_env_isa(module)
    return module


def _apply_env_isa(module: ModuleType) -> None:
    name = os.environ.get("MIXQ_FAST_ISA")
    if name:
        set_isa(name, module)


def set_isa(name: str | None, module: ModuleType | None = None) -> None:
    """Force the kernels onto one instruction set (``None``: the best this CPU has)."""
    module = module or kernels()
    if name is None:
        module.set_isa(-1)
        return
    if name not in ISAS:
        known = list(ISAS)
        raise FastEngineUnavailableError(f"unknown instruction set {name!r}; use one of {known}")
    if not module.supports_isa(ISAS[name]):
        raise FastEngineUnavailableError(f"this CPU cannot run the {name} kernels")
    module.set_isa(ISAS[name])


def supported_isas() -> list[str]:
    """The instruction sets this CPU can run, slowest first."""
    module = kernels()
    return [name for name, code in ISAS.items() if module.supports_isa(code)]


def active_isa() -> str:
    """The instruction set the kernels use now."""
    code = int(kernels().get_isa())
    return next(name for name, value in ISAS.items() if value == code)
