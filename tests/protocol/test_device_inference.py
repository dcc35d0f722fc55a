"""The device type from the peers' command lines, the feature bits and the config size."""

from __future__ import annotations

import pytest

from vhtrace.analysis import Analyser
from vhtrace.protocol import device_config, spec
from vhtrace.protocol.device_inference import (
    Peer,
    from_command_line,
    from_config_size,
    from_features,
    from_peers,
)
from vhtrace.protocol.spec import DeviceType
from vhtrace.record import device_hint
from vhtrace.trace.records import MessageRecord

TESTPMD = "dpdk-testpmd"


def test_dpdk_vhost_pmd_back_end_names_net() -> None:
    peer = Peer("back-end", TESTPMD, [TESTPMD, "-l", "0,1", "--vdev", "net_vhost0,iface=/s"])
    found = from_command_line(peer, "/s")
    assert found is not None and found.device is DeviceType.NET
    assert found.describe() == "device net (from the back-end's --vdev net_vhost0)"


def test_the_vdev_on_this_socket_wins() -> None:
    argv = [TESTPMD, "--vdev=crypto_virtio_user0,path=/a", "--vdev", "net_virtio_user1,path=/b"]
    found = from_command_line(Peer("front-end", TESTPMD, argv), "/b")
    assert found is not None and (found.device, found.how) == (
        DeviceType.NET, "from the front-end's --vdev net_virtio_user1")  # fmt: skip
    found = from_command_line(Peer("front-end", TESTPMD, argv), "/a")
    assert found is not None and found.device is DeviceType.CRYPTO


@pytest.mark.parametrize(
    ("program", "argv", "device"),
    [
        ("qemu-storage-daemon", ["--export", "type=vhost-user-blk,id=e,node-name=n"], "blk"),
        ("virtiofsd", ["--socket-path=/s"], "fs"),
        ("vhost-device-vsock", ["--vm", "guest-cid=4"], "vsock"),
        ("vhost-device-sound", ["--socket", "/s"], "sound"),
        ("vhost-user-gpu", ["--socket-path", "/s"], "gpu"),
        ("ovs-vswitchd", [], "net"),
        ("cloud-hypervisor", ["--disk", "vhost_user=true,socket=/s"], "blk"),
    ],
)
def test_back_end_programs_name_their_device(program: str, argv: list[str], device: str) -> None:
    found = from_command_line(Peer("back-end", program, [program, *argv]), "/s")
    assert found is not None and found.device == device, found


def test_unknown_programs_name_nothing_and_the_back_end_comes_first() -> None:
    assert from_command_line(Peer("back-end", "my-backend", ["my-backend", "--vdev", "x"])) is None
    front = Peer("front-end", TESTPMD, [TESTPMD, "--vdev", "net_virtio_user0,path=/f"])
    back = Peer("back-end", "vhost-device-i2c", ["vhost-device-i2c"])
    found = from_peers(front, back, "/f", "/b")
    assert found is not None and found.device is DeviceType.I2C
    assert from_peers(front, None, "/f") is not None
    assert from_peers(None, None) is None


def test_feature_bits_only_one_device_defines() -> None:
    # What DPDK 22.11's vhost PMD offers (GET_FEATURES reply recorded on this machine).
    found = from_features(0xD7C66E7CB)
    assert found is not None and found.device is DeviceType.NET
    assert "CTRL_RX (bit 18)" in found.how
    # Bits every device could mean (bit 0) or none but the transport's: no guess.
    assert from_features(1 << 0 | 1 << spec.VIRTIO_F_VERSION_1) is None
    assert from_features(1 << spec.VIRTIO_F_VERSION_1 | 1 << 30) is None
    # A bit no device type defines: no guess.
    assert from_features(1 << 45) is None


def test_config_size_of_exactly_one_device() -> None:
    crypto = device_config.LAYOUTS[DeviceType.CRYPTO][-1]
    assert (crypto.name, crypto.offset) == ("max_size", 48)
    found = from_config_size(48 + 8)  # struct virtio_crypto_config, to its last field
    assert found is not None and found.device is DeviceType.CRYPTO
    assert from_config_size(3) is None


def test_record_device_given_wins_then_qemu_then_peers() -> None:
    info = {"frontend": {}, "backend": {}}
    assert device_hint.session_device(info, "net", "blk") == {
        "device": "blk", "device_from": "given with --device at record"}  # fmt: skip
    assert device_hint.session_device(info, "net")["device_from"] == (
        "from the front-end's QEMU command line"
    )
    assert device_hint.session_device(info, None) == {}


def _reply(seq: int, request: int, value: int) -> MessageRecord:
    raw = request.to_bytes(4, "little") + (0x5).to_bytes(4, "little") + (8).to_bytes(4, "little")
    return MessageRecord(seq, seq, seq, 1, "main", "backend", raw + value.to_bytes(8, "little"), ())


def test_analyser_names_bits_once_the_features_tell() -> None:
    analyser = Analyser()
    request = (1).to_bytes(4, "little") + (1).to_bytes(4, "little") + bytes(4)
    analyser.message(MessageRecord(1, 1, 1, 1, "main", "frontend", request, ()))
    reply = analyser.message(_reply(2, 1, 0xD7C66E7CB))
    summary = reply.analysis.summary()
    assert "MRG_RXBUF" in summary and "bit15" not in summary
    assert analyser.inferences[1].device is DeviceType.NET
    # --device at show time: forced, no inference.
    forced = Analyser(DeviceType.BLK, force=True)
    forced.message(MessageRecord(1, 1, 1, 1, "main", "frontend", request, ()))
    assert "MRG_RXBUF" not in forced.message(_reply(2, 1, 0xD7C66E7CB)).analysis.summary()
    assert forced.inferences == {}
