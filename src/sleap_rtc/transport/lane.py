"""Direct lanes: bulk bytes over TLS straight to the worker, beside the control channel.

A lane is one TCP connection, TLS-encrypted, carrying binary frames
(:mod:`sleap_rtc.protocol.transfer`: header, transfer id, raw bytes), so a transfer
never turns bytes into base64 in JSON and never queues control messages behind it.

Who is who: the worker makes a throw-away self-signed certificate when it starts
and announces its SHA-256 fingerprint, its addresses and a random token over the
control channel, which the server has already authenticated (as WebRTC announces
its DTLS fingerprint over the signaling). The client checks the fingerprint of the
certificate it was shown *before* it says the token, so a token never reaches
anyone but that worker; the worker checks the token before it reads or sends a
single frame. Tokens belong to one control session and die with it.

Hostile connections cost little: the token must arrive within
:data:`HELLO_TIMEOUT_S`, at most :data:`MAX_HANDSHAKES` handshakes run at once,
and a wrong token is answered by closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import hmac
import logging
import secrets
import socket
import ssl
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from sleap_rtc.protocol.transfer import (
    FRAME,
    FRAME_BYTES,
    LANE_HELLO,
    LANE_MAGIC,
    LANE_READY,
    TransferError,
    frame_header,
    frame_key,
    parse_frame,
    read_frame_header,
)
from sleap_rtc.transport.base import ChannelClosed

log = logging.getLogger("sleap_rtc.transport")

#: How long a connection may take to say its token (and a client to hear READY).
HELLO_TIMEOUT_S: Final = 10.0
#: Connections that haven't said a token yet, at once; more are closed at once.
MAX_HANDSHAKES: Final = 32
#: How long a client tries each offered address.
CONNECT_TIMEOUT_S: Final = 3.0
#: Socket buffers of a lane (bulk bytes: large buffers keep the pipe full).
SOCKET_BUFFER: Final = 4 << 20
#: What a lane's reader buffers before it stops reading: two frames, so a frame is
#: read in a few large pieces, not many small ones.
READ_LIMIT: Final = 2 * FRAME_BYTES


class LaneClosed(ChannelClosed):
    """The lane is gone (the peer closed it, the network dropped it, or it broke a rule)."""


class Lane:
    """One end of a lane: frames ``(transfer id, offset, bytes)`` both ways, in order.

    Kinds: :class:`StreamLane` (TLS straight to the worker) and the relay lane
    through the server (:mod:`sleap_rtc.transport.relaylane`); transfers use any.
    """

    #: Where the bytes go: "direct" or "relay".
    via = "direct"

    def __init__(self) -> None:
        self._closed: str | None = None
        #: Set once the lane is closed, from either end.
        self.done = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def send(self, key: str, offset: int, data: bytes | memoryview) -> None:
        """One frame; waits while the peer can't take more (flow control)."""
        raise NotImplementedError

    async def recv(self) -> tuple[str, int, bytes]:
        """The next frame: ``(transfer id, offset, data)``; LaneClosed at the end."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection now (what is buffered is lost)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _mark(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
        self.done.set()

    def _lost(self, reason: str) -> LaneClosed:
        self._mark(reason)
        return LaneClosed(self._closed or reason)

    def _parse(self, message: str | bytes) -> tuple[str, int, bytes]:
        """A frame that came as one message; a broken one closes the lane."""
        try:
            if not isinstance(message, bytes):
                raise TransferError("INVALID_FRAME", "a text message on a lane")
            return parse_frame(message)
        except TransferError as exc:
            lost = self._lost(f"the peer broke the lane: {exc.message}")
            self.abort()
            raise lost from None


class StreamLane(Lane):
    """A lane over one TLS connection (frames are written back to back)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self._reader = reader
        self._writer = writer

    async def send(self, key: str, offset: int, data: bytes | memoryview) -> None:
        if self._closed is not None:
            raise LaneClosed(self._closed)
        try:
            self._writer.write(frame_header(key, offset, len(data)))
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise self._lost(f"lane lost: {exc}") from None

    async def recv(self) -> tuple[str, int, bytes]:
        if self._closed is not None:
            raise LaneClosed(self._closed)
        try:
            key_len, offset, length = read_frame_header(await self._reader.readexactly(FRAME.size))
            key = frame_key(await self._reader.readexactly(key_len))
            data = await self._reader.readexactly(length)
        except TransferError as exc:
            lost = self._lost(f"the peer broke the lane: {exc.message}")
            self.abort()
            raise lost from None
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            raise self._lost(
                "the peer closed the lane" if _eof(exc) else f"lane lost: {exc}"
            ) from None
        return key, offset, data

    def abort(self) -> None:
        self._mark("closed by this side")
        transport = self._writer.transport
        with contextlib.suppress(Exception):
            transport.abort()

    async def close(self) -> None:
        self._mark("closed by this side")
        with contextlib.suppress(Exception):
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)


def _eof(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.IncompleteReadError) and not exc.partial


def _tune(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)


# -- the worker's side ----------------------------------------------------------------------


def _self_signed() -> tuple[ssl.SSLContext, str]:
    """A TLS server context with a fresh self-signed certificate, and its fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sleap-rtc worker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only: a private folder, removed at once.
    with tempfile.TemporaryDirectory(prefix="sleap-rtc-lane-") as folder:
        cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.touch(0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(cert_path, key_path)
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return context, fingerprint


def host_addresses() -> list[str]:
    """The addresses of this machine offered to clients: the same ones WebRTC offers as
    host candidates (so ``ice_host_addresses`` / ``SLEAP_RTC_ICE_HOSTS`` pin both)."""
    import aioice.ice

    found: list[str] = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)
    return sorted(set(found), key=lambda a: (":" in a, a))


def _joined(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class LaneServer:
    """The worker's listener: TLS, then a token, then the lane goes to whoever issued it.

    ``listen`` is ``host:port`` (port 0: any free one); ``advertise`` the addresses
    offered to clients (default: the listening host, or every address of this machine
    when it listens on all of them).
    """

    def __init__(self, listen: str = "0.0.0.0:0", advertise: Sequence[str] | None = None) -> None:
        self.host, _, port = listen.rpartition(":")
        self.host = self.host.strip("[]") or "0.0.0.0"
        self.port = int(port or 0)
        self._advertise = list(advertise or [])
        self.fingerprint = ""
        self.addresses: list[str] = []
        self._server: asyncio.Server | None = None
        self._tokens: dict[bytes, Callable[[Lane], None]] = {}
        self._handshakes = 0
        self._lanes: set[Lane] = set()

    async def start(self) -> LaneServer:
        context, self.fingerprint = await asyncio.to_thread(_self_signed)
        self._server = await asyncio.start_server(
            self._accept,
            self.host,
            self.port,
            ssl=context,
            ssl_handshake_timeout=HELLO_TIMEOUT_S,
            limit=READ_LIMIT,
        )
        port = self._server.sockets[0].getsockname()[1]
        hosts = self._advertise
        if not hosts:
            wildcard = self.host in ("0.0.0.0", "::", "")
            hosts = (host_addresses() or ["127.0.0.1"]) if wildcard else [self.host]
        self.addresses = [_joined(h, port) for h in hosts][:16]
        return self

    def issue(self, on_lane: Callable[[Lane], None]) -> str:
        """A new token; a lane that says it is handed to ``on_lane``."""
        token = secrets.token_bytes(32)
        self._tokens[hashlib.sha256(token).digest()] = on_lane
        return token.hex()

    def revoke(self, token: str) -> None:
        with contextlib.suppress(ValueError):
            self._tokens.pop(hashlib.sha256(bytes.fromhex(token)).digest(), None)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._handshakes >= MAX_HANDSHAKES:
            writer.transport.abort()
            return
        self._handshakes += 1
        lane: Lane | None = None
        try:
            hello = await asyncio.wait_for(reader.readexactly(LANE_HELLO.size), HELLO_TIMEOUT_S)
            magic, token = LANE_HELLO.unpack(hello)
            on_lane = self._tokens.get(hashlib.sha256(token).digest())
            if magic != LANE_MAGIC or on_lane is None:
                writer.transport.abort()
                return
            # The lane is the session's before the client hears READY, so what it asks
            # for next over the channel already finds it.
            lane = StreamLane(reader, writer)
            self._lanes.add(lane)
            on_lane(lane)
            writer.write(LANE_READY)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            if lane is not None:
                lane.abort()
                self._lanes.discard(lane)
            writer.transport.abort()
            return
        finally:
            self._handshakes -= 1
        _tune(writer)
        try:
            await lane.done.wait()
        finally:
            self._lanes.discard(lane)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for lane in list(self._lanes):
            lane.abort()
        self._tokens.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)


# -- the client's side ----------------------------------------------------------------------


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def _connect_one(address: str, fingerprint: str, token: bytes, timeout: float) -> Lane:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Trust comes from the fingerprint the authenticated channel announced, not a CA.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    host, port = _split(address)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, limit=READ_LIMIT), timeout
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        seen = hashlib.sha256(der or b"").hexdigest()
        if not hmac.compare_digest(seen, fingerprint):
            raise LaneClosed(f"{address} showed a certificate that is not the worker's")
        writer.write(LANE_HELLO.pack(LANE_MAGIC, token))
        await writer.drain()
        if await asyncio.wait_for(reader.readexactly(1), timeout) != LANE_READY:
            raise LaneClosed(f"{address} did not take the lane")
    except BaseException:
        writer.transport.abort()
        raise
    _tune(writer)
    return StreamLane(reader, writer)


async def connect_lane(
    addresses: Sequence[str],
    fingerprint: str,
    token: str,
    *,
    timeout: float = CONNECT_TIMEOUT_S,
) -> Lane:
    """A lane to the first offered address that answers as the worker; LaneClosed if none."""
    raw = bytes.fromhex(token)
    attempts = [
        asyncio.ensure_future(_connect_one(a, fingerprint, raw, timeout)) for a in addresses
    ]
    problems: list[str] = []
    winner: Lane | None = None
    try:
        for next_done in asyncio.as_completed(attempts):
            try:
                winner = await next_done
                return winner
            except (LaneClosed, TimeoutError, OSError, EOFError, ValueError) as exc:
                problems.append(str(exc) or type(exc).__name__)
    finally:
        for attempt in attempts:
            attempt.cancel()
        # A second address that opened too is closed, never leaked.
        for attempt in attempts:
            opened = attempt.done() and not attempt.cancelled() and attempt.exception() is None
            if opened and attempt.result() is not winner:
                attempt.result().abort()
    raise LaneClosed("no offered address answered: " + ("; ".join(problems[:4]) or "none offered"))
