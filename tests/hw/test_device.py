"""Device descriptions: the bundled parts' published figures, and validation on load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from mixq.errors import DeviceError
from mixq.hw import FpgaCostModel
from mixq.hw.device import DEVICES_DIR, available_devices, device_from_dict, load_device

# name: (LUTs, FFs, DSP slices, 36 Kb BRAMs) from DS190 (Zynq-7000) and DS891 (ZU+).
PUBLISHED = {
    "xc7z020": (53200, 106400, 220, 140),
    "xc7z045": (218600, 437200, 900, 545),
    "xczu3eg": (70560, 141120, 360, 216),
    "xczu9eg": (274080, 548160, 2520, 912),
}


def test_bundled_devices_hold_the_published_counts() -> None:
    assert available_devices() == sorted(PUBLISHED)
    for name, (luts, ffs, dsps, bram36) in PUBLISHED.items():
        device = load_device(name.upper())
        assert (device.luts, device.ffs, device.dsps, device.bram36) == (luts, ffs, dsps, bram36)


def test_every_figure_cites_a_source() -> None:
    for name in available_devices():
        device = load_device(name)
        assert set(device.sources) == {
            "luts",
            "ffs",
            "dsps",
            "bram36",
            "clock_mhz",
            "ddr_gb_per_s",
            "dsp_ports",
        }
        assert all(len(source) > 10 for source in device.sources.values())


def test_carry_segments_and_packing_follow_the_family() -> None:
    z7, zu = load_device("xc7z045"), load_device("xczu9eg")
    assert (z7.carry4, zu.carry4) == (218600 // 4, 274080 // 4)
    # Derived from the port widths: two fields fit 4-bit weights at 4-bit activations (21
    # bits apart in the 25-bit DSP48E1 pre-adder), not at 8-bit ones, nor 8-bit weights.
    assert [z7.macs_per_dsp(b, 4) for b in (2, 4, 5, 8)] == [2, 2, 1, 1]
    assert [z7.macs_per_dsp(b, 8) for b in (2, 3, 4, 8)] == [2, 1, 1, 1]
    # The DSP48E2's 27-bit pre-adder fits 3-bit weights at 8-bit activations (24 + 3 bits).
    assert [zu.macs_per_dsp(b, 8) for b in (3, 4, 8)] == [2, 1, 1]
    fixed = dataclasses.replace(z7, dsp_packing={4: 2, 8: 1})  # a file's what-if packing
    assert fixed.macs_per_dsp(4, 8) == 2
    with pytest.raises(DeviceError, match="no DSP packing for 9-bit"):
        fixed.macs_per_dsp(9, 4)


def _xc7z020() -> dict:
    return yaml.safe_load((DEVICES_DIR / "xc7z020.yaml").read_text())


@pytest.mark.parametrize(
    "field", ["luts", "ffs", "dsps", "bram36", "clock_mhz", "ddr_gb_per_s", "dsp_ports"]
)
def test_a_missing_resource_is_named(field: str) -> None:
    data = _xc7z020()
    del data[field]
    with pytest.raises(DeviceError, match=f"'{field}' is missing"):
        device_from_dict(data, "test.yaml")


@pytest.mark.parametrize("value", [-220, 0, 2.5, "many", True, float("nan")])
def test_a_bad_count_is_refused(value: object) -> None:
    data = _xc7z020()
    data["dsps"]["value"] = value
    with pytest.raises(DeviceError, match="'dsps' must be"):
        device_from_dict(data, "test.yaml")


def test_negative_clock_and_missing_source_and_bad_packing() -> None:
    data = _xc7z020()
    data["clock_mhz"]["value"] = -100
    with pytest.raises(DeviceError, match="'clock_mhz' must be positive"):
        device_from_dict(data)
    data = _xc7z020()
    del data["luts"]["source"]
    with pytest.raises(DeviceError, match="'luts' has no source"):
        device_from_dict(data)
    data = _xc7z020()
    data["dsp_packing"] = {"value": {4: 0}, "source": "a what-if for this test"}
    with pytest.raises(DeviceError, match="dsp_packing"):
        device_from_dict(data)
    data = _xc7z020()
    data["dsp_ports"]["value"] = {"preadd_bits": 25, "multiplier_bits": 18}
    with pytest.raises(DeviceError, match="'dsp_ports' must give exactly"):
        device_from_dict(data)
    data = _xc7z020()
    data["dsp_ports"]["value"]["preadd_bits"] = 1
    with pytest.raises(DeviceError, match="'dsp_ports': DSP port width preadd_bits"):
        device_from_dict(data)
    data = _xc7z020()
    data["ddr_gb_per_s"]["value"] = 0
    with pytest.raises(DeviceError, match="'ddr_gb_per_s' must be positive"):
        device_from_dict(data)
    data = _xc7z020()
    data["luts"] = 53200  # a bare number, no source
    with pytest.raises(DeviceError, match=r"'luts' must be a mapping \{value, source\}"):
        device_from_dict(data)
    data = _xc7z020()
    data["synthesis_family"] = "stratix"
    with pytest.raises(DeviceError, match="synthesis_family"):
        device_from_dict(data)


def test_files_unknown_missing_or_unreadable(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"unknown device 'xc7z999'.*xc7z020"):
        load_device("xc7z999")
    with pytest.raises(DeviceError, match="device file not found"):
        load_device(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("luts: [1, 2\n")
    with pytest.raises(DeviceError, match="not valid YAML"):
        load_device(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(DeviceError, match="must be a mapping"):
        load_device(listed)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(DeviceError, match=r"device file .*binary.yaml is not UTF-8 text"):
        load_device(binary)
    with pytest.raises(DeviceError, match="is not UTF-8 text"):
        FpgaCostModel(str(binary))
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(DeviceError, match="device file not found"):
        load_device(folder)


def test_a_custom_device_file_loads(tmp_path: Path) -> None:
    data = _xc7z020()
    data["name"] = "half-z020"
    data["luts"]["value"] = 26600
    path = tmp_path / "half.yaml"
    path.write_text(yaml.safe_dump(data))
    device = load_device(path)
    assert (device.name, device.luts, device.carry4) == ("half-z020", 26600, 6650)
