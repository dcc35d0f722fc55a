"""Device models: what the mock back-end does with the guest's requests."""

from mockbackend.devices.base import TRANSPORT_FEATURES, Device
from mockbackend.devices.blk import BlkDevice
from mockbackend.devices.net import NetLoopback
from mockbackend.devices.rng import RngDevice

__all__ = ["TRANSPORT_FEATURES", "BlkDevice", "Device", "NetLoopback", "RngDevice"]
