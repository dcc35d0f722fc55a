"""What a conversation has established: feature tests, ring bookkeeping, addresses, limits."""

from __future__ import annotations

from vhtrace.protocol import spec
from vhtrace.protocol.spec import DeviceType, ProtocolFeature
from vhtrace.protocol.state import ConversationState, Region


def test_features_count_only_once_acked_or_offered() -> None:
    state = ConversationState()
    assert not state.has_virtio(spec.VIRTIO_F_VERSION_1)
    assert not state.has_protocol(ProtocolFeature.REPLY_ACK)
    state.features_offered = 1 << spec.VIRTIO_F_VERSION_1
    assert state.offered_virtio(spec.VIRTIO_F_VERSION_1)
    assert not state.has_virtio(spec.VIRTIO_F_VERSION_1)
    state.set_features(1 << spec.VIRTIO_F_VERSION_1)
    state.set_protocol_features(1 << ProtocolFeature.REPLY_ACK)
    assert state.has_virtio(spec.VIRTIO_F_VERSION_1)
    assert not state.has_virtio(spec.VIRTIO_F_RING_PACKED)
    assert state.has_protocol(ProtocolFeature.REPLY_ACK)
    assert not state.has_protocol(ProtocolFeature.MQ)


def test_the_payload_context_follows_the_features_and_the_device() -> None:
    state = ConversationState()
    assert not state.payload_context().packed
    state.set_features(1 << spec.VIRTIO_F_RING_PACKED)
    assert state.payload_context().packed
    state.set_protocol_features(1 << ProtocolFeature.XEN_MMAP)
    assert state.payload_context().xen_mmap
    state.set_device(DeviceType.NET)
    assert state.payload_context().device is DeviceType.NET
    assert state.payload_context() is state.payload_context()  # kept until a change


def test_set_features_forgets_a_ring_started_without_features_ok() -> None:
    state = ConversationState(started_without_features_ok=True)
    state.set_features(0)
    assert state.started_without_features_ok is False


def test_rings_are_kept_by_index_and_hostile_indices_are_not() -> None:
    state = ConversationState()
    ring = state.ring(1)
    ring.num = 256
    assert state.ring(1) is ring and list(state.rings) == [1]
    beyond = state.ring(spec.MAX_VRINGS)
    beyond.num = 8
    assert state.ring(spec.MAX_VRINGS).num is None
    assert list(state.rings) == [1]


def test_the_address_space_of_ring_addresses() -> None:
    state = ConversationState()
    assert state.address_space() == "uaddr"
    state.set_protocol_features(1 << ProtocolFeature.GPA_ADDRESSES)
    assert state.address_space() == "gpa"
    state.set_features(1 << spec.VIRTIO_F_ACCESS_PLATFORM)
    assert state.address_space() == "iova"


def test_ring_limits_come_from_the_queue_count_net_counting_pairs() -> None:
    state = ConversationState()
    assert state.ring_limit() is None
    state.queue_num = 2
    assert state.ring_limit() == (2, "2 queues (GET_QUEUE_NUM)")
    state.set_device(DeviceType.NET)
    assert state.ring_limit() == (5, "2 queue pairs (GET_QUEUE_NUM)")


def test_a_region_contains_ranges_in_either_address_space() -> None:
    region = Region(guest_phys_addr=0x1000, memory_size=0x1000, userspace_addr=0x7F00_0000,
                    mmap_offset=0, seq=3)  # fmt: skip
    assert region.contains(0x1000, 0x1000, "gpa")
    assert not region.contains(0x1800, 0x1000, "gpa")
    assert region.contains(0x7F00_0010, 16, "uaddr")
    assert not region.contains(0x1000, 16, "uaddr")
    assert (region.start("gpa"), region.start("uaddr")) == (0x1000, 0x7F00_0000)
