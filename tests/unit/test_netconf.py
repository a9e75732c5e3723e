"""The guest's boot-time network ioctls: their argument layouts (the effect is proven by
the VM tests: forwards, outbound traffic and stack segments all need it)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from cove.guest.netconf import NetworkError, ifreq, netmask, nic_with_mac, rtentry, sockaddr_in


def test_netmask_from_prefix() -> None:
    assert netmask(24) == "255.255.255.0"
    assert netmask(0) == "0.0.0.0"
    assert netmask(32) == "255.255.255.255"
    assert netmask(20) == "255.255.240.0"
    with pytest.raises(NetworkError, match="/33"):
        netmask(33)


def test_sockaddr_in_is_the_kernels_layout() -> None:
    raw = sockaddr_in("10.0.2.15")
    assert len(raw) == 16
    family, port = struct.unpack_from("=HH", raw)
    assert (family, port) == (socket.AF_INET, 0)
    assert raw[4:8] == bytes([10, 0, 2, 15]) and raw[8:] == bytes(8)


def test_ifreq_and_rtentry_sizes_match_struct_ifreq_and_rtentry() -> None:
    assert len(ifreq("eth0")) == 40 and ifreq("eth0").startswith(b"eth0\0")
    assert len(rtentry("10.0.2.2")) == 120  # sizeof(struct rtentry) on 64-bit Linux
    flags = struct.unpack_from("@H", rtentry("10.0.2.2"), 56)[0]
    assert flags == 0x3  # RTF_UP | RTF_GATEWAY
    assert rtentry("10.0.2.2")[28:32] == bytes([10, 0, 2, 2])  # rt_gateway.sin_addr
    with pytest.raises(NetworkError):
        ifreq("a-name-far-too-long")


def test_the_stack_nic_is_found_by_its_mac(tmp_path: Path) -> None:
    for name, mac in (("eth0", "52:54:00:12:34:56"), ("eth1", "0a:c5:01:02:03:04")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "address").write_text(mac + "\n")
    assert nic_with_mac("0A:C5:01:02:03:04", str(tmp_path)) == "eth1"
    with pytest.raises(NetworkError, match="no NIC with the stack segment's MAC"):
        nic_with_mac("0a:c5:ff:ff:ff:ff", str(tmp_path))


def test_a_new_mac_is_the_kernels_ifreq_with_an_ethernet_sockaddr() -> None:
    """SIOCSIFHWADDR's argument (a restore gives each clone its own MAC through it)."""
    mac = bytes.fromhex("0ac501020304")
    assert ifreq("eth0", struct.pack("@H", 1) + mac) == \
        struct.pack("16sH14s8x", b"eth0", 1, mac)
