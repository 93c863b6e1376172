"""FPGA device descriptions: published resource counts, each with its source, from YAML.

A device file (``devices/<name>.yaml`` beside this module, or any path) gives every figure
as ``{value, source}``. Loading checks that each is present and positive and names the
file and field when one is not. The DSP packing is derived from the slice's port widths
(:mod:`mixq.hw.packing`); a file may instead fix it with ``dsp_packing`` (weight bits ->
MACs per slice), for what-if studies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixq.errors import DeviceError
from mixq.hw.packing import DSP48E1, DspPorts, dsp_packing
from mixq.textfile import read_text

DEVICES_DIR = Path(__file__).resolve().parent / "devices"

# Figures every device file holds, and whether each must be an integer.
_COUNTS = ("luts", "ffs", "dsps", "bram36")
_REALS = ("clock_mhz", "ddr_gb_per_s")
_TEXT = ("name", "family", "synthesis_family")
_SYNTHESIS_FAMILIES = ("xc7", "xcup")


@dataclass(frozen=True)
class Device:
    """One FPGA part, as the cost model needs it.

    >>> d = load_device("xc7z020")
    >>> d.luts, d.dsps, d.bram36, d.carry4, d.ddr_gb_per_s
    (53200, 220, 140, 13300, 4.26)
    >>> d.macs_per_dsp(4, act_bits=4), d.macs_per_dsp(4, act_bits=8), d.macs_per_dsp(8, 8)
    (2, 1, 1)
    """

    name: str
    family: str  # e.g. "zynq-7000"
    synthesis_family: str  # synth_xilinx -family whose unit costs apply: "xc7" or "xcup"
    luts: int  # 6-input LUTs
    ffs: int  # flip-flops
    dsps: int  # DSP48 slices
    bram36: int  # 36 Kb block RAMs
    clock_mhz: float  # the MAC arrays' clock
    ddr_gb_per_s: float  # off-chip memory bandwidth of the board, peak
    dsp_ports: DspPorts = DSP48E1  # widths the packing rule reads
    # Fixed packing (weight bits up to the key -> MACs per slice), overriding the rule.
    dsp_packing: Mapping[int, int] | None = None
    sources: Mapping[str, str] = field(default_factory=dict)  # field -> where it comes from

    @property
    def carry4(self) -> int:
        """Carry chain in 4-bit segments: every LUT drives one carry bit, four to a CARRY4
        on 7-series (UG474) and eight to a CARRY8, two segments, on UltraScale (UG574)."""
        return self.luts // 4

    @property
    def bram_bits(self) -> int:
        return self.bram36 * 36 * 1024

    @property
    def ddr_bytes_per_s(self) -> float:
        return self.ddr_gb_per_s * 1e9

    def macs_per_dsp(self, weight_bits: int, act_bits: int) -> int:
        """MACs one DSP slice does per cycle for ``weight_bits`` weights times ``act_bits``
        activations: :func:`mixq.hw.packing.dsp_packing`, unless the file fixes it."""
        if self.dsp_packing is None:
            return dsp_packing(self.dsp_ports, weight_bits, act_bits).macs
        for bits in sorted(self.dsp_packing):
            if weight_bits <= bits:
                return self.dsp_packing[bits]
        raise DeviceError(
            f"{self.name}: no DSP packing for {weight_bits}-bit weights "
            f"(dsp_packing covers up to {max(self.dsp_packing)} bits)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "synthesis_family": self.synthesis_family,
            "luts": self.luts,
            "ffs": self.ffs,
            "dsps": self.dsps,
            "bram36": self.bram36,
            "clock_mhz": self.clock_mhz,
            "ddr_gb_per_s": self.ddr_gb_per_s,
            "dsp_ports": self.dsp_ports.to_dict(),
            "dsp_packing": (
                None
                if self.dsp_packing is None
                else {str(k): v for k, v in self.dsp_packing.items()}
            ),
        }


def available_devices() -> list[str]:
    """Names of the bundled device files."""
    return sorted(p.stem for p in DEVICES_DIR.glob("*.yaml"))


def load_device(name_or_path: str | Path) -> Device:
    """A bundled device by name (``"xc7z045"``, case-insensitive) or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = DEVICES_DIR / f"{str(name_or_path).lower()}.yaml"
        if not path.is_file():
            known = ", ".join(available_devices())
            raise DeviceError(f"unknown device {name_or_path!r}; bundled devices: {known}")
    text = read_text(path, "device file", DeviceError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DeviceError(f"device file {path} is not valid YAML: {exc}") from None
    return device_from_dict(data, origin=str(path))


def device_from_dict(data: Any, origin: str = "device") -> Device:
    """Validate a parsed device description; every problem names ``origin`` and the field."""
    if not isinstance(data, Mapping):
        raise DeviceError(f"{origin}: a device description must be a mapping")
    texts = {key: _text(data, key, origin) for key in _TEXT}
    if texts["synthesis_family"] not in _SYNTHESIS_FAMILIES:
        raise DeviceError(
            f"{origin}: synthesis_family must be one of {_SYNTHESIS_FAMILIES}, "
            f"got {texts['synthesis_family']!r}"
        )
    sources: dict[str, str] = {}
    counts = {key: int(_figure(data, key, origin, sources, integer=True)) for key in _COUNTS}
    reals = {key: float(_figure(data, key, origin, sources, integer=False)) for key in _REALS}
    ports = _ports(data, origin, sources)
    packing = _packing(data, origin, sources) if "dsp_packing" in data else None
    return Device(
        name=texts["name"],
        family=texts["family"],
        synthesis_family=texts["synthesis_family"],
        luts=counts["luts"],
        ffs=counts["ffs"],
        dsps=counts["dsps"],
        bram36=counts["bram36"],
        clock_mhz=reals["clock_mhz"],
        ddr_gb_per_s=reals["ddr_gb_per_s"],
        dsp_ports=ports,
        dsp_packing=packing,
        sources=sources,
    )


def _text(data: Mapping[str, Any], key: str, origin: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DeviceError(f"{origin}: {key!r} is missing or not a non-empty string")
    return value


def _entry(data: Mapping[str, Any], key: str, origin: str, sources: dict[str, str]) -> Any:
    entry = data.get(key)
    if entry is None:
        raise DeviceError(f"{origin}: resource {key!r} is missing")
    if not isinstance(entry, Mapping) or "value" not in entry:
        raise DeviceError(f"{origin}: {key!r} must be a mapping {{value, source}}")
    source = entry.get("source")
    if not isinstance(source, str) or not source.strip():
        raise DeviceError(f"{origin}: {key!r} has no source; every figure must cite one")
    sources[key] = source
    return entry["value"]


def _figure(
    data: Mapping[str, Any], key: str, origin: str, sources: dict[str, str], *, integer: bool
) -> float:
    value = _entry(data, key, origin, sources)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DeviceError(f"{origin}: {key!r} must be a number, got {value!r}")
    if integer and value != int(value):
        raise DeviceError(f"{origin}: {key!r} must be a whole number, got {value!r}")
    if value <= 0:
        raise DeviceError(f"{origin}: {key!r} must be positive, got {value!r}")
    return value


def _ports(data: Mapping[str, Any], origin: str, sources: dict[str, str]) -> DspPorts:
    value = _entry(data, "dsp_ports", origin, sources)
    names = ("preadd_bits", "multiplier_bits", "accumulator_bits")
    if not isinstance(value, Mapping) or set(value) != set(names):
        raise DeviceError(f"{origin}: 'dsp_ports' must give exactly {', '.join(names)}")
    try:
        return DspPorts(**{name: value[name] for name in names})
    except DeviceError as exc:
        raise DeviceError(f"{origin}: 'dsp_ports': {exc}") from None


def _packing(data: Mapping[str, Any], origin: str, sources: dict[str, str]) -> dict[int, int]:
    value = _entry(data, "dsp_packing", origin, sources)
    if not isinstance(value, Mapping) or not value:
        raise DeviceError(f"{origin}: 'dsp_packing' must map weight bits to MACs per DSP")
    packing: dict[int, int] = {}
    for bits, macs in value.items():
        if (
            isinstance(bits, bool)
            or not str(bits).isdigit()
            or isinstance(macs, bool)
            or not isinstance(macs, int)
            or macs < 1
        ):
            raise DeviceError(
                f"{origin}: 'dsp_packing' entry {bits!r}: {macs!r} must be "
                "weight bits: a positive whole number of MACs per DSP"
            )
        packing[int(bits)] = macs
    return dict(sorted(packing.items()))
