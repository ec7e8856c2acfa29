"""tools/local_dask.py's ports: the emulated pods and local clusters listen on ports it hands out."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tools import local_dask


def test_free_ports_lie_below_the_ephemeral_range_and_skip_a_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    low, high = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [local_dask.free_port() for _ in range(5)]
    # Below the range the kernel hands out to outgoing connections, which could take a port before its listener does.
    assert all(20000 <= p < min(low, 32000) for p in ports) and len(set(ports)) == 5, (ports, low, high)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", local_dask.free_port()))
        busy.listen()
        taken = busy.getsockname()[1]
        monkeypatch.setattr(local_dask, "_candidates", iter([taken, taken + 1]))
        assert local_dask.free_port() == taken + 1
