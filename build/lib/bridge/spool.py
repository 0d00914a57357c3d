"""The disk spool: where the pub/sub bridge puts what Redis sends while its memory is full.

A pub/sub subscriber cannot ask Redis to wait: whatever it does not read piles up
in Redis's output buffer for it, and past ``client-output-buffer-limit pubsub``
Redis closes the connection and everything published afterwards is lost. So when
Celery falls behind and the bridge's in-memory buffer reaches its limit, the
reader keeps draining Redis and appends what it reads to this file instead; the
sender reads it back, oldest first, as memory frees up, and once it has caught up
the file is truncated and the reader goes back to memory.

The file is an anonymous temporary file (unlinked at once, so a bridge that dies
leaves nothing behind, and takes its spooled messages with it, as it would the
ones in memory: pub/sub is at-most-once; the stream input is the durable one).
Records are ``channel length, data length, received`` (``<IId``) followed by the
two byte strings. One thread appends and another reads, each at its own offset
(``pwrite``/``pread``); a lock guards the offsets and the switch back to memory.

An append is all or nothing: the write offset moves only once every byte of the
batch is written, and a write that fails part way (``ENOSPC`` on a full disk,
``EFBIG`` past a file-size limit) is undone by truncating the file back to where
the batch began, then raised. So the reader never meets a partial record, and
what was appended before stays readable, in order.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import tempfile
import threading
from typing import Any

#: channel length, data length, received (epoch seconds)
RECORD = struct.Struct("<IId")
#: Largest read the sender makes at once, so that it keeps sending while it reads.
READ_CHUNK = 4 << 20

#: What the bridge buffers: ``(channel, data, received, receipt)``.
Message = tuple[bytes, bytes, float, Any]


class Spool:
    """An append-only file of messages, read back in the order they were written."""

    def __init__(self, directory: str | None = None):
        self._file = tempfile.TemporaryFile(  # noqa: SIM115 - lives until close()
            dir=directory or None, prefix="analytics-bridge-", suffix=".spool"
        )
        self.directory = directory or tempfile.gettempdir()
        self._fd = self._file.fileno()
        self._lock = threading.Lock()
        self._written = 0
        self._read = 0
        #: True from the first append until everything appended has been read back.
        self.active = False
        #: Messages appended and not read back yet.
        self.pending = 0
        #: Largest size the file reached, in bytes.
        self.peak_bytes = 0

    @property
    def bytes_pending(self) -> int:
        """Bytes written and not read back yet (0 when inactive)."""
        return self._written - self._read if self.active else 0

    def append(self, messages: list[Message]) -> None:
        """Write messages at the end (their receipts are not kept: pub/sub has none).

        All of them or none: on OSError (a full disk) the file is as it was before
        the call, and the error is raised for the caller to keep them elsewhere.
        """
        blob = b"".join(
            RECORD.pack(len(channel), len(data), received) + channel + data
            for channel, data, received, _ in messages
        )
        with self._lock:
            start = end = self._written
            view = memoryview(blob)
            try:
                while view:
                    written = os.pwrite(self._fd, view, end)
                    if not written:  # not seen on Linux; would otherwise loop forever
                        raise OSError(errno.ENOSPC, "spool write wrote nothing")
                    end += written
                    view = view[written:]
            except OSError:
                # Give the partial batch's blocks back (a full disk needs them) and leave
                # nothing past the write offset; shrinking a file takes no space.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
                raise
            self._written = end
            self.active = True
            self.pending += len(messages)
            self.peak_bytes = max(self.peak_bytes, end)

    def take(self, max_bytes: int, per_message: int = 0) -> list[Message]:
        """The oldest messages, while their bytes stay within ``max_bytes``.

        Each message counts its channel and data plus ``per_message``; the first one
        is returned whatever its size, so that a large message cannot block the spool.
        """
        with self._lock:
            end = self._written
        start = self._read
        size = min(end - start, max(min(max_bytes, READ_CHUNK), RECORD.size))
        chunk = os.pread(self._fd, size, start)
        messages: list[Message] = []
        offset = taken = 0
        while len(chunk) - offset >= RECORD.size:
            channel_length, data_length, received = RECORD.unpack_from(chunk, offset)
            body = offset + RECORD.size
            stop = body + channel_length + data_length
            if stop > len(chunk):
                if messages:
                    break
                # One record larger than what was read: read just that record.
                chunk = os.pread(self._fd, stop - offset, start + offset)
                if len(chunk) != stop - offset or start + len(chunk) > end:
                    # Appends are whole, so this is a damaged file: say so rather than
                    # hand over a cut message and read past the write offset.
                    raise OSError(
                        errno.EIO, f"spool record at offset {start} runs past the end written"
                    )
                offset, body, stop = 0, RECORD.size, stop - offset
            weight = channel_length + data_length + per_message
            if messages and taken + weight > max_bytes:
                break
            split = body + channel_length
            messages.append((chunk[body:split], chunk[split:stop], received, None))
            offset, taken = stop, taken + weight
        with self._lock:
            self._read = start + offset
            self.pending -= len(messages)
        return messages

    def finish_if_empty(self) -> bool:
        """When everything written has been read back: empty the file and go inactive."""
        with self._lock:
            if self._read != self._written:
                return False
            if self._written:
                os.ftruncate(self._fd, 0)
            self._read = self._written = 0
            self.active = False
            return True

    def close(self) -> None:
        self._file.close()
