"""The test world's network guard for GPU pods: put on PYTHONPATH, every Python process of the pod (the agent, the
trainer) may only reach the addresses in LORABOT_NET_ALLOW ("host:port,..."; the bucket). Any other lookup or
connection (the Hub, huggingface.co, a stand-in Hub) is refused and written to LORABOT_NET_VIOLATIONS, which the
test world's teardown reads to fail the test: nothing may be fetched on GPU time.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback

_ALLOW = {item.strip() for item in os.environ.get("LORABOT_NET_ALLOW", "").split(",") if item.strip()}
_HOSTS = {item.rsplit(":", 1)[0] for item in _ALLOW}
_LOG = os.environ.get("LORABOT_NET_VIOLATIONS")
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def _refuse(what: str) -> ConnectionRefusedError:
    if _LOG:
        stack = "".join(traceback.format_stack(limit=8)[:-2])
        with open(_LOG, "a") as log:
            log.write(f"pid {os.getpid()} (parent {os.getppid()}, argv {sys.argv!r}): {what}\n{stack}\n")
    return ConnectionRefusedError(f"lorabot test world: a GPU pod may reach only the bucket; {what} refused")


def _allowed(address: object) -> bool:
    if not isinstance(address, tuple) or len(address) < 2:
        return True  # a Unix socket: not the network
    return f"{address[0]}:{address[1]}" in _ALLOW


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _allowed(address):
        raise _refuse(f"connect to {address!r}")
    _connect(self, address)  # type: ignore[arg-type]


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _allowed(address):
        raise _refuse(f"connect to {address!r}")
    return _connect_ex(self, address)  # type: ignore[arg-type]


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and name not in _HOSTS:
        raise _refuse(f"name lookup of {name!r}")
    return _getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]


if _ALLOW:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]
