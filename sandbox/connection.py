"""Faults that give no HTTP answer at all: a closed, a reset, or a silent connection.

API calls and downloads both meet them (`drop`, `reset`, `hang` in `faults.py`).
"""

import asyncio
import socket
import struct
import time

from aiohttp import web

CONNECTION_FAULTS = frozenset({"drop", "reset", "hang"})
HANG_LIMIT_S = 600.0  # a hanging answer gives up by itself after this, client or not


async def connection_fault(request: web.Request, kind: str) -> web.Response:
    """No HTTP answer at all: a closed, a reset, or a silent connection."""
    # The whole request first: a client still writing its body would meet the reset there
    # (and may swallow it), not where a real broken answer is met, on reading.
    await request.read()
    if kind == "hang":
        await hang(request)
    return _reset(request) if kind == "reset" else _drop(request)


async def hang(request: web.Request) -> None:
    """Wait, answering nothing, until the client hangs up (or a long time has passed)."""
    give_up = time.monotonic() + HANG_LIMIT_S
    while (
        request.transport is not None
        and not request.transport.is_closing()
        and time.monotonic() < give_up
    ):
        await asyncio.sleep(0.01)


def _drop(request: web.Request) -> web.Response:
    """Close the connection with no answer at all."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()  # never sent: the transport is gone


def _reset(request: web.Request) -> web.Response:
    """Abort the connection with a TCP reset (RST) instead of an orderly close."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:  # linger on, timeout 0: close() sends RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response()  # never sent
