"""The device config space named: virtio-blk, net, fs and scsi fields in GET/SET_CONFIG."""

from __future__ import annotations

import struct

import pytest

from vhtrace.protocol import device_config, payloads
from vhtrace.protocol.payloads import PayloadContext
from vhtrace.protocol.spec import DeviceType


def _sample_value(field: device_config.ConfigField, n: int) -> object:
    if field.name == "mac":
        return f"52:54:00:12:34:{n:02x}"
    if field.name == "tag":
        return f"share{n}"
    if field.fmt.endswith("s"):
        return bytes([n + 1]) * struct.calcsize(field.fmt)
    return n + 1  # fits every width, differs per field


@pytest.mark.parametrize("device", list(device_config.LAYOUTS), ids=str)
def test_every_field_round_trips(device: DeviceType) -> None:
    fields = device_config.LAYOUTS[device]
    values = {field.name: _sample_value(field, n) for n, field in enumerate(fields)}
    data = device_config.encode(device, values)
    assert device_config.decode(device, 0, data) == values


@pytest.mark.parametrize("device", list(device_config.LAYOUTS), ids=str)
def test_fields_are_in_order_and_do_not_overlap(device: DeviceType) -> None:
    end = 0
    for field in device_config.LAYOUTS[device]:
        assert field.offset >= end, f"{field.name} overlaps the field before it"
        assert field.offset % min(struct.calcsize(field.fmt), 8) == 0 or "s" in field.fmt
        end = field.offset + struct.calcsize("<" + field.fmt)


def test_virtio_blk_offsets_match_the_spec_struct() -> None:
    # struct virtio_blk_config as QEMU 7.2 sends it (57 bytes): packed by hand here,
    # field by field, the way the virtio spec lists them.
    raw = struct.pack("<QIIHBBIBBHIBBHIIIIIB", 0x20000, 0, 126, 0, 0, 0, 512, 0, 0, 1, 1,
                      1, 0, 4, 0x8000, 1, 1, 0x8000, 1, 0)  # fmt: skip
    named = device_config.decode(DeviceType.BLK, 0, raw)
    assert named["capacity"] == 0x20000 and named["seg_max"] == 126
    assert named["blk_size"] == 512 and named["min_io_size"] == 1 and named["opt_io_size"] == 1
    assert named["writeback"] == 1 and named["num_queues"] == 4
    assert named["max_write_zeroes_sectors"] == 0x8000 and named["write_zeroes_may_unmap"] == 0
    assert "max_secure_erase_sectors" not in named  # past the 57 bytes


def test_a_window_names_only_the_fields_wholly_inside_it() -> None:
    assert device_config.decode(DeviceType.BLK, 32, b"\x01") == {"writeback": 1}
    # bytes 4..12: capacity's upper half (not shown) and size_max
    assert device_config.decode(DeviceType.BLK, 4, bytes(4) + struct.pack("<I", 7)) == {
        "size_max": 7
    }
    # bytes 3..11: the MAC's end (not shown), status, max_virtqueue_pairs, mtu's first byte
    assert device_config.decode(DeviceType.NET, 3, bytes(8)) == {
        "status": 0,
        "max_virtqueue_pairs": 0,
    }


def test_encode_refuses_a_field_the_device_has_not() -> None:
    with pytest.raises(KeyError, match="no such fs config field: capacity"):
        device_config.encode(DeviceType.FS, {"capacity": 1})


def test_the_config_payload_carries_the_named_fields_when_the_device_is_known() -> None:
    region = device_config.encode(DeviceType.FS, {"tag": "myfs", "num_request_queues": 2})
    data = struct.pack("<III", 0, len(region), 0) + region
    fs = PayloadContext(device=DeviceType.FS)
    decoded = payloads.decode("config", data, fs)
    assert decoded.fields["device_config"] == {"tag": "myfs", "num_request_queues": 2}
    assert decoded.summary(fs) == "offset 0 size 40 writable tag 'myfs' num_request_queues 2"
    assert "  num_request_queues: 2" in decoded.details(fs)
    assert payloads.encode("config", decoded.fields, fs) == data  # byte-exact, as every layout
    unknown = payloads.decode("config", data, PayloadContext())
    assert "device_config" not in unknown.fields
    assert " data 6d796673" in unknown.summary(PayloadContext())


def test_a_window_of_zeros_is_not_named() -> None:
    # QEMU's GET_CONFIG request carries the window it wants filled, all zeros
    blk = PayloadContext(device=DeviceType.BLK)
    decoded = payloads.decode("config", struct.pack("<III", 0, 57, 0) + bytes(57), blk)
    assert decoded.summary(blk) == "offset 0 size 57 writable"


def test_a_window_without_a_summary_field_shows_what_it_has() -> None:
    net = PayloadContext(device=DeviceType.NET)
    region = device_config.encode(DeviceType.NET, {"speed": 10000})[12:]
    decoded = payloads.decode("config", struct.pack("<III", 12, 4, 0) + region, net)
    assert decoded.summary(net) == "offset 12 size 4 writable speed 10000"


def test_blk_capacity_reads_in_bytes_on_the_line() -> None:
    blk = PayloadContext(device=DeviceType.BLK)
    region = device_config.encode(DeviceType.BLK, {"capacity": 2 << 21, "blk_size": 4096})
    decoded = payloads.decode("config", struct.pack("<III", 0, len(region), 0) + region, blk)
    summary = "offset 0 size 24 writable capacity 2 GiB seg_max 0 blk_size 4096"
    assert decoded.summary(blk) == summary
