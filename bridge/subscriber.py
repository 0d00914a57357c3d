"""A pub/sub subscription read straight off the socket, as fast as Redis sends.

Redis closes a subscriber whose unread output passes ``client-output-buffer-limit
pubsub`` (32 MB by default) and everything published to it afterwards is lost.
redis-py's ``PubSub.get_message`` costs a few syscalls and tens of microseconds of
Python per message: at 40,000 messages/s the bridge fell behind and was
disconnected (measured). Here one ``recv`` takes up to a megabyte, hiredis parses
every complete reply in C, and the GIL is released while the socket is read, so
the reader keeps up while the bridge's sender thread works.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import hiredis
import redis.connection

#: Bytes read per ``recv``: about a thousand 900-byte events.
READ_SIZE = 1 << 20
#: Seconds of silence before a PING checks that the connection is alive ...
PING_AFTER = 15.0
#: ... and seconds of silence after which it is taken for dead.
DEAD_AFTER = 45.0


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS context a ``rediss://`` URL asks for, as redis-py builds it for the other
    connections: ``ssl_cert_reqs`` (default required), ``ssl_ca_certs``,
    ``ssl_certfile`` and ``ssl_keyfile`` (a client certificate), ``ssl_check_hostname``."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    reqs = _CERT_REQS[str(options.get("ssl_cert_reqs") or "required").lower().removeprefix("cert_")]
    context.check_hostname = reqs != ssl.CERT_NONE and options.get("ssl_check_hostname", True)
    context.verify_mode = reqs
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return context


class SubscriptionLost(ConnectionError):
    """The subscription's connection closed or went silent; reconnect."""


def _command(*parts: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Subscription:
    """``PSUBSCRIBE pattern`` on a connection of its own; :meth:`read` yields messages."""

    def __init__(self, url: str, pattern: str, client_name: str, timeout: float = 5.0):
        self.pattern = pattern.encode()
        self._reader = hiredis.Reader()
        self._sock = self._connect(url, timeout)
        self._last_data = time.monotonic()
        self._pinged = False
        try:
            self._handshake(url, client_name)
        except BaseException:
            self.close()
            raise

    def _connect(self, url: str, timeout: float) -> socket.socket:
        options: dict[str, Any] = redis.connection.parse_url(url)
        kind = options.get("connection_class")
        if kind is redis.connection.UnixDomainSocketConnection:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(options["path"])
        else:
            sock = socket.create_connection(
                (options.get("host", "localhost"), options.get("port", 6379)), timeout=timeout
            )
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if kind is redis.connection.SSLConnection:
                sock = tls_context(options).wrap_socket(sock, server_hostname=options.get("host"))
        self._options = options
        return sock

    def _request(self, *parts: str | bytes) -> Any:
        self._sock.sendall(_command(*parts))
        while True:
            reply = self._reader.gets()
            if reply is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise SubscriptionLost(f"Redis refused {parts[0]!r}: {reply}")
                return reply
            if not self._fill():
                raise SubscriptionLost(f"no reply from Redis to {parts[0]!r}")

    def _handshake(self, url: str, client_name: str) -> None:
        password, username = self._options.get("password"), self._options.get("username")
        if password:
            self._request("AUTH", *((username,) if username else ()), password)
        self._request("CLIENT", "SETNAME", client_name)
        reply = self._request("PSUBSCRIBE", self.pattern)
        if not (isinstance(reply, list) and reply[:2] == [b"psubscribe", self.pattern]):
            raise SubscriptionLost(f"unexpected reply to PSUBSCRIBE: {reply!r}")
        self._sock.settimeout(1.0)

    def _fill(self) -> bool:
        """Read what the socket has; False when it had nothing within the timeout."""
        try:
            data = self._sock.recv(READ_SIZE)
        except TimeoutError:
            return False
        except OSError as exc:
            raise SubscriptionLost(f"connection error: {exc}") from None
        if not data:
            raise SubscriptionLost("Redis closed the connection")
        self._reader.feed(data)
        self._last_data = time.monotonic()
        self._pinged = False
        return True

    def read(self) -> Iterator[tuple[bytes, bytes]]:
        """``(channel, data)`` of every message that has arrived; waits up to a second."""
        if not self._fill():
            silent = time.monotonic() - self._last_data
            if silent > DEAD_AFTER:
                raise SubscriptionLost(f"no data from Redis for {silent:.0f}s")
            if silent > PING_AFTER and not self._pinged:
                self._sock.sendall(_command("PING"))
                self._pinged = True
            return
        gets = self._reader.gets
        while (reply := gets()) is not False:
            if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
                yield reply[2], reply[3]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
