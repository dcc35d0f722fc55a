"""virtio-blk backed by a file: read, write, flush, get-id, discard and write-zeroes.

A request chain is a 16-byte header (u32 type, u32 reserved, u64 sector) in readable
buffers, then data (readable for writes, writable for reads and GET_ID), then one status
byte in the last writable buffer. Data moves between the file and guest memory with
``preadv``/``pwritev`` straight into the mapped buffers, without copies.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from mockbackend.devices.base import Device
from mockbackend.virtqueue import Buffer, Chain, MemoryAccess, buffer_views, gather, scatter
from vhtrace.protocol import device_config
from vhtrace.protocol.spec import DeviceType

SECTOR = 512

T_IN = 0
T_OUT = 1
T_FLUSH = 4
T_GET_ID = 8
T_DISCARD = 11
T_WRITE_ZEROES = 13

S_OK = 0
S_IOERR = 1
S_UNSUPP = 2

F_SIZE_MAX = 1
F_SEG_MAX = 2
F_RO = 5
F_BLK_SIZE = 6
F_FLUSH = 9
F_CONFIG_WCE = 11
F_MQ = 12
F_DISCARD = 13
F_WRITE_ZEROES = 14

ID_BYTES = 20
SEG_MAX = 126
MAX_DISCARD_SECTORS = 1 << 22
MAX_DISCARD_SEGMENTS = 1
WRITE_ZEROES_UNMAP = 1

_HEADER = struct.Struct("<IIQ")
_SEGMENT = struct.Struct("<QII")
CONFIG_SIZE = 60
"""struct virtio_blk_config up to write_zeroes_may_unmap and its padding."""
_WRITEBACK = device_config.offset_of(DeviceType.BLK, "writeback")


class BlkDevice(Device):
    """A disk whose bytes are the bytes of ``path``."""

    name = "blk"
    virtio_id = 2

    def __init__(
        self,
        path: Path | str,
        *,
        readonly: bool = False,
        num_queues: int = 1,
        serial: str = "mockbackend",
        discard: bool = True,
        write_zeroes: bool = True,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.readonly = readonly
        self.num_queues = num_queues
        self.serial = serial
        self.fd = os.open(self.path, os.O_RDONLY if readonly else os.O_RDWR)
        self.capacity = os.fstat(self.fd).st_size // SECTOR
        self.features |= 1 << F_SEG_MAX | 1 << F_BLK_SIZE | 1 << F_FLUSH | 1 << F_CONFIG_WCE
        if num_queues > 1:
            self.features |= 1 << F_MQ
        if readonly:
            self.features |= 1 << F_RO
        else:
            if discard:
                self.features |= 1 << F_DISCARD
            if write_zeroes:
                self.features |= 1 << F_WRITE_ZEROES
        self.wce = 1
        self.counts: dict[int, int] = {}
        """Requests seen, by type (for scripts and tests)."""

    def config(self) -> bytes:
        return device_config.encode(
            DeviceType.BLK,
            {
                "capacity": self.capacity,
                "seg_max": SEG_MAX,
                "blk_size": SECTOR,
                "writeback": self.wce,
                "num_queues": self.num_queues,
                "max_discard_sectors": MAX_DISCARD_SECTORS,
                "max_discard_seg": MAX_DISCARD_SEGMENTS,
                "discard_sector_alignment": 1,
                "max_write_zeroes_sectors": MAX_DISCARD_SECTORS,
                "max_write_zeroes_seg": MAX_DISCARD_SEGMENTS,
                "write_zeroes_may_unmap": 1,
            },
            size=CONFIG_SIZE,
        )

    def write_config(self, offset: int, data: bytes) -> None:
        if offset <= _WRITEBACK < offset + len(data):
            self.wce = data[_WRITEBACK - offset]

    def resize(self, size_bytes: int) -> None:
        """Change the disk size (the file follows); announce it with CONFIG_CHANGE_MSG."""
        os.ftruncate(self.fd, size_bytes)
        self.capacity = size_bytes // SECTOR

    # -- requests --------------------------------------------------------------

    def handle(self, queue: int, chain: Chain, mem: MemoryAccess) -> int:
        if chain.readable_bytes < _HEADER.size or chain.writable_bytes < 1:
            raise ValueError("virtio-blk request without header or status byte")
        kind, _, sector = _HEADER.unpack(gather(mem, chain.readable, 0, _HEADER.size))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        data_in = _trim(chain.writable, chain.writable_bytes - 1)
        status_at = _tail(chain.writable)
        written = 0
        try:
            if kind == T_IN:
                written = self._read(mem, sector, data_in)
                status = S_OK if written == sum(b.length for b in data_in) else S_IOERR
            elif kind == T_OUT:
                status = self._write(mem, sector, chain, _HEADER.size)
            elif kind == T_FLUSH:
                os.fsync(self.fd)
                status = S_OK
            elif kind == T_GET_ID:
                ident = self.serial.encode()[:ID_BYTES].ljust(ID_BYTES, b"\0")
                written = scatter(mem, data_in, 0, ident)
                status = S_OK
            elif kind in (T_DISCARD, T_WRITE_ZEROES):
                status = self._zero(mem, chain, kind)
            else:
                status = S_UNSUPP
        except OSError:
            status = S_IOERR
        mem.write(status_at, bytes([status]))
        return written + 1

    def _in_range(self, sector: int, length: int) -> bool:
        return sector * SECTOR + length <= self.capacity * SECTOR and sector < 1 << 55

    def _read(self, mem: MemoryAccess, sector: int, buffers: list[Buffer]) -> int:
        length = sum(b.length for b in buffers)
        if not self._in_range(sector, length):
            return 0
        views = buffer_views(mem, buffers)
        try:
            done = os.preadv(self.fd, views, sector * SECTOR) if views else 0
        finally:
            for view in views:
                view.release()
        for b in buffers:
            mem.dirty(b.addr, b.length)
        return done

    def _write(self, mem: MemoryAccess, sector: int, chain: Chain, skip: int) -> int:
        buffers = _skip(chain.readable, skip)
        length = sum(b.length for b in buffers)
        if self.readonly:
            return S_IOERR
        if not self._in_range(sector, length):
            return S_IOERR
        views = buffer_views(mem, buffers)
        try:
            done = os.pwritev(self.fd, views, sector * SECTOR) if views else 0
        finally:
            for view in views:
                view.release()
        return S_OK if done == length else S_IOERR

    def _zero(self, mem: MemoryAccess, chain: Chain, kind: int) -> int:
        bit = F_DISCARD if kind == T_DISCARD else F_WRITE_ZEROES
        if self.readonly or not self.features >> bit & 1:
            return S_UNSUPP
        body = gather(mem, chain.readable, _HEADER.size, chain.readable_bytes - _HEADER.size)
        if not body or len(body) % _SEGMENT.size:
            return S_IOERR
        for offset in range(0, len(body), _SEGMENT.size):
            sector, count, _flags = _SEGMENT.unpack_from(body, offset)
            if count > MAX_DISCARD_SECTORS or not self._in_range(sector, count * SECTOR):
                return S_IOERR
            _punch_or_zero(self.fd, sector * SECTOR, count * SECTOR)
        return S_OK

    def close(self) -> None:
        os.close(self.fd)


def _punch_or_zero(fd: int, offset: int, length: int) -> None:
    """Make a byte range read as zeros (the file keeps its size)."""
    zeros = bytes(min(length, 1 << 20))
    done = 0
    while done < length:
        take = min(len(zeros), length - done)
        os.pwrite(fd, zeros[:take], offset + done)
        done += take


def _trim(buffers: list[Buffer], length: int) -> list[Buffer]:
    """The first ``length`` bytes of ``buffers``."""
    out = []
    for b in buffers:
        if length <= 0:
            break
        out.append(Buffer(b.addr, min(b.length, length)))
        length -= b.length
    return out


def _skip(buffers: list[Buffer], offset: int) -> list[Buffer]:
    """``buffers`` without their first ``offset`` bytes."""
    out = []
    for b in buffers:
        if offset >= b.length:
            offset -= b.length
            continue
        out.append(Buffer(b.addr + offset, b.length - offset))
        offset = 0
    return out


def _tail(buffers: list[Buffer]) -> int:
    """Address of the last writable byte (the status)."""
    last = buffers[-1]
    if last.length == 0:
        raise ValueError("zero-length status buffer")
    return last.addr + last.length - 1
