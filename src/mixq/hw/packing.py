"""How many fixed-point MACs one DSP slice does per cycle: derived from bit widths.

Two MACs that share an activation pack into one slice (``hardware/rtl/packed_mac.v``):
the pre-adder forms ``w_hi * 2^S + w_lo``, the multiplier takes it times the activation,
and the 48-bit accumulator holds both sums, ``S`` bits apart. That is sound only while

* the low field holds its whole dot product: ``S`` = the signed product's bits plus the
  accumulator's guard bits (:data:`mixq.hw.units.ACC_GUARD_BITS`, ResNet-18's longest row);
* the shifted high weight fits the pre-adder: ``S + weight_bits <= preadd_bits``;
* the high field holds its sum too: ``2 * S <= accumulator_bits``;
* the activation (unsigned, plus a sign bit) fits the multiplier's other port.

Otherwise the slice does one MAC. Every figure is a bit width; nothing is assumed.

>>> rule = dsp_packing(DSP48E1, weight_bits=4, act_bits=4)
>>> rule.macs, rule.spacing, rule.max_products
(2, 21, 9986)
>>> dsp_packing(DSP48E1, weight_bits=4, act_bits=8).macs  # 25 + 4 bits > the 25-bit pre-adder
1
>>> max_products(spacing=11, weight_bits=4, act_bits=4)  # "11 bits apart": 9 products
9
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixq.errors import DeviceError
from mixq.hw.units import ACC_GUARD_BITS


@dataclass(frozen=True)
class DspPorts:
    """The widths of a DSP slice that packing depends on."""

    preadd_bits: int  # pre-adder output, the multiplier's wide input (DSP48E1: 25; E2: 27)
    multiplier_bits: int  # the multiplier's other input (18 on both)
    accumulator_bits: int  # P register (48 on both)

    def __post_init__(self) -> None:
        for name, value in self.to_dict().items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise DeviceError(f"DSP port width {name} must be a whole number >= 2")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


DSP48E1 = DspPorts(preadd_bits=25, multiplier_bits=18, accumulator_bits=48)  # UG479
DSP48E2 = DspPorts(preadd_bits=27, multiplier_bits=18, accumulator_bits=48)  # UG579


@dataclass(frozen=True)
class Packing:
    """The packing rule's verdict for one weight and activation width."""

    macs: int  # MACs per slice per cycle: 2 when packed, else 1
    spacing: int  # S: the bits between the two fields (the low field's width)
    max_products: int  # products the low field holds at that spacing, worst case
    reason: str  # why it packs or not


def product_bits(weight_bits: int, act_bits: int) -> int:
    """Signed bits of a symmetric ``weight_bits`` weight times an unsigned activation."""
    largest = (2 ** (weight_bits - 1) - 1) * (2**act_bits - 1)
    return largest.bit_length() + 1


def max_products(spacing: int, weight_bits: int, act_bits: int) -> int:
    """Largest products a ``spacing``-bit signed low field sums without overflow."""
    largest = (2 ** (weight_bits - 1) - 1) * (2**act_bits - 1)
    return (2 ** (spacing - 1) - 1) // largest


def dsp_packing(
    ports: DspPorts,
    weight_bits: int,
    act_bits: int,
    guard_bits: int = ACC_GUARD_BITS,
) -> Packing:
    """Two MACs per slice when two ``weight_bits`` fields fit (module docstring), else one."""
    if weight_bits < 2 or act_bits < 1:
        raise DeviceError(f"cannot pack {weight_bits}-bit weights at {act_bits}-bit activations")
    spacing = product_bits(weight_bits, act_bits) + guard_bits
    longest = max_products(spacing, weight_bits, act_bits)
    needs = {
        f"the shifted weight needs {spacing + weight_bits} bits of the {ports.preadd_bits}-bit "
        "pre-adder": spacing + weight_bits <= ports.preadd_bits,
        f"two {spacing}-bit fields need {2 * spacing} bits of the "
        f"{ports.accumulator_bits}-bit accumulator": 2 * spacing <= ports.accumulator_bits,
        f"the activation needs {act_bits + 1} bits of the {ports.multiplier_bits}-bit port": (
            act_bits + 1 <= ports.multiplier_bits
        ),
    }
    broken = [text for text, ok in needs.items() if not ok]
    if broken:
        return Packing(1, spacing, longest, "one MAC per slice: " + "; ".join(broken))
    return Packing(
        2,
        spacing,
        longest,
        f"two MACs per slice, fields {spacing} bits apart ({guard_bits} guard bits: "
        f"{longest} products before the low field overflows, >= {2**guard_bits})",
    )
