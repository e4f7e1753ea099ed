"""One host connection: the handshake (CNXN, AUTH) and the streams opened over it.

Threads, and who does what:

- the connection's reader thread reads messages and routes them; it never blocks on a
  service (incoming data is queued on the stream, and acknowledged when a service takes it);
- each OPEN'd stream gets a service thread (shell, exec, sync) that reads and writes the stream;
- writes to the socket from any thread go through one lock, a whole message at a time.

Flow control, per stream and per direction: after sending WRTE the sender waits for OKAY
before the next WRTE. `Stream.write` waits for the host's OKAY; `Stream.read_chunk` sends our
OKAY when a service takes a chunk, so a host cannot run ahead of a slow service.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .protocol import (A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION, A_VERSION_MIN,
                       A_VERSION_SKIP_CHECKSUM, A_WRTE, AUTH_RSAPUBLICKEY, AUTH_SIGNATURE,
                       AUTH_TOKEN, HEADER, MAX_PAYLOAD, MAX_PAYLOAD_V1, TOKEN_SIZE, Header, Message,
                       ProtocolError, command_name)

if TYPE_CHECKING:
    from .server import FakeAdbd

log = logging.getLogger("fakeadbd")


class StreamClosed(Exception):
    """The stream (or its whole connection) is closed; the service should stop."""


class _PeerGone(Exception):
    """The socket reached EOF, failed, or was dropped on purpose."""


class Stream:
    """One service opened by the host: its ids, incoming chunks, and flow-controlled writes."""

    def __init__(self, connection: Connection, local_id: int, remote_id: int, service: str) -> None:
        self.connection = connection
        self.local_id = local_id  # ours; the host puts it in arg1
        self.remote_id = remote_id  # the host's; we put it in arg1
        self.service = service
        self._cond = threading.Condition()
        self._inbox: deque[bytes] = deque()
        self._buffer = bytearray()  # read_exact's leftovers
        self._may_write = True  # no WRTE of ours is waiting for the host's OKAY
        self._closed = False
        self._sent_close = False
        self._write_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        """True once either side closed the stream or the connection went away."""
        return self._closed

    @property
    def max_payload(self) -> int:
        """The largest WRTE payload the host accepts."""
        return self.connection.max_payload

    def write(self, data: bytes) -> None:
        """Send `data` in WRTEs of at most max_payload, each after the host's OKAY for the last."""
        view = memoryview(data)
        with self._write_lock:
            for start in range(0, len(view), self.max_payload):
                with self._cond:
                    while not self._may_write and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        raise StreamClosed(self.service)
                    self._may_write = False
                chunk = bytes(view[start:start + self.max_payload])
                self.connection.send(Message(A_WRTE, self.local_id, self.remote_id, chunk))

    def read_chunk(self) -> bytes:
        """The next WRTE payload from the host (acknowledged now), or b'' once the stream closes."""
        with self._cond:
            while not self._inbox and not self._closed:
                self._cond.wait()
            if not self._inbox:
                return b""
            chunk = self._inbox.popleft()
            closed = self._closed
        if not closed:
            self.connection.send(Message(A_OKAY, self.local_id, self.remote_id))
        return chunk

    def read_exact(self, size: int) -> bytes:
        """Exactly `size` bytes across WRTE boundaries; raises StreamClosed if they never come."""
        while len(self._buffer) < size:
            chunk = self.read_chunk()
            if not chunk:
                raise StreamClosed(f"{self.service}: closed with {len(self._buffer)} of {size} bytes")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def close(self) -> None:
        """Close from our side (CLSE), once; the host replies CLSE, which is ignored."""
        with self._cond:
            self._closed = True
            send = not self._sent_close
            self._sent_close = True
            self._cond.notify_all()
        if send:
            self.connection.forget(self)
            try:
                self.connection.send(Message(A_CLSE, self.local_id, self.remote_id))
            except StreamClosed:
                pass

    # -- called by the connection's reader thread --

    def _on_okay(self) -> None:
        with self._cond:
            self._may_write = True
            self._cond.notify_all()

    def _on_write(self, data: bytes) -> None:
        with self._cond:
            self._inbox.append(data)
            self._cond.notify_all()

    def _on_host_close(self) -> None:
        """The host sent CLSE: stop the service and answer CLSE (adb-shell waits for it)."""
        self.close()

    def _on_connection_lost(self) -> None:
        with self._cond:
            self._closed = True
            self._sent_close = True
            self._cond.notify_all()


class Connection:
    """One TCP connection from a host: handshake state, its streams, its threads."""

    def __init__(self, daemon: FakeAdbd, sock: socket.socket, number: int) -> None:
        self.daemon = daemon
        self.number = number
        self._sock = sock
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._streams_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._service_threads: list[threading.Thread] = []
        self._token: bytes | None = None
        self._gone = threading.Event()
        self.version = A_VERSION_MIN  # until the host's CNXN says otherwise
        self.max_payload = MAX_PAYLOAD_V1
        self.online = False  # CNXN sent back: services may be opened
        self.host_banner = ""
        self.bytes_received = 0
        self.thread = threading.Thread(target=self._serve, name=f"fakeadbd-conn{number}", daemon=True)

    # -- sending --

    def send(self, message: Message) -> None:
        """Send one whole message; raises StreamClosed when the connection is gone."""
        if self._gone.is_set():
            raise StreamClosed("connection closed")
        log.debug("conn%d -> %s", self.number, message)
        packed = message.pack(with_checksum=self.version < A_VERSION_SKIP_CHECKSUM)
        try:
            with self._send_lock:
                self._sock.sendall(packed)
        except OSError as exc:
            self.drop(f"send failed: {exc}")
            raise StreamClosed("connection closed") from None

    def drop(self, reason: str) -> None:
        """Cut the TCP connection now (as a pulled cable would); safe to call twice."""
        if self._gone.is_set():
            return
        self._gone.set()
        log.debug("conn%d dropped: %s", self.number, reason)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def forget(self, stream: Stream) -> None:
        """Remove a closed stream from the routing table."""
        with self._streams_lock:
            self._streams.pop(stream.local_id, None)

    def busy(self) -> bool:
        """True while any service of this connection is still running."""
        return any(thread.is_alive() for thread in list(self._service_threads))

    def join(self, timeout: float) -> list[str]:
        """Wait for the reader and service threads; returns the names of any still running."""
        self.thread.join(timeout)
        for thread in list(self._service_threads):
            thread.join(timeout)
        return [t.name for t in [self.thread, *self._service_threads] if t.is_alive()]

    # -- the reader thread --

    def _recv_exact(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            try:
                chunk = self._sock.recv(min(size - len(data), 256 * 1024))
            except OSError:
                chunk = b""
            if not chunk or self._gone.is_set():
                raise _PeerGone()
            data += chunk
            self.bytes_received += len(chunk)
            if self.daemon._faults.should_drop_after(len(chunk)):
                self.drop("fault injection: drop after bytes received")
                raise _PeerGone()
        return bytes(data)

    def _serve(self) -> None:
        try:
            while True:
                header = Header.parse(self._recv_exact(HEADER.size), MAX_PAYLOAD)
                data = self._recv_exact(header.data_length)
                header.verify(data)
                message = Message(header.command, header.arg0, header.arg1, data)
                log.debug("conn%d <- %s", self.number, message)
                self._dispatch(message)
        except ProtocolError as exc:
            self.daemon._record_error(f"connection {self.number}: {exc}")
        except (_PeerGone, StreamClosed):
            pass
        finally:
            self.drop("reader finished")
            with self._streams_lock:
                streams, self._streams = list(self._streams.values()), {}
            for stream in streams:
                stream._on_connection_lost()
            try:
                self._sock.close()
            except OSError:
                pass

    def _dispatch(self, message: Message) -> None:
        command = message.command
        if command == A_CNXN:
            self._on_connect(message)
        elif command == A_AUTH:
            self._on_auth(message)
        elif not self.online:
            log.debug("conn%d ignores %s before authorization", self.number, command_name(command))
        elif command == A_OPEN:
            self._on_open(message)
        elif command in (A_OKAY, A_WRTE, A_CLSE):
            with self._streams_lock:
                stream = self._streams.get(message.arg1)
            if stream is None or stream.remote_id != message.arg0:
                return  # a stream that already closed; late messages are normal
            if command == A_OKAY:
                stream._on_okay()
            elif command == A_WRTE:
                stream._on_write(message.data)
            else:
                stream._on_host_close()
        # STLS and SYNC are not offered by this daemon; a host that sends them is ignored.

    def _on_connect(self, message: Message) -> None:
        """CNXN(version, maxdata, "host::features=..."): authenticate, or accept at once."""
        self.version = min(message.arg0, A_VERSION)
        self.max_payload = min(message.arg1, MAX_PAYLOAD) or MAX_PAYLOAD_V1
        self.host_banner = message.data.rstrip(b"\0").decode(errors="replace")
        self.online = False
        if self.daemon.auth_required:
            self._send_token()
        else:
            self._go_online()

    def _send_token(self) -> None:
        self._token = os.urandom(TOKEN_SIZE)
        self.send(Message(A_AUTH, AUTH_TOKEN, 0, self._token))

    def _go_online(self) -> None:
        self.online = True
        banner = self.daemon.banner().encode()
        self.send(Message(A_CNXN, A_VERSION, self.max_payload, banner))

    def _on_auth(self, message: Message) -> None:
        if self._token is None or self.online:
            return
        if message.arg0 == AUTH_SIGNATURE:
            if self.daemon.keystore.verify(self._token, message.data) is not None:
                self._go_online()
            else:
                self._send_token()  # the host tries its next key, then offers a public key
        elif message.arg0 == AUTH_RSAPUBLICKEY:
            key_line = message.data.rstrip(b"\0").decode(errors="replace")
            if self.daemon.allow_new_keys:
                try:
                    self.daemon.keystore.add(key_line)
                except ValueError as exc:
                    self.daemon._record_error(f"connection {self.number}: bad public key: {exc}")
                    return
                self._go_online()
            else:
                # The phone would show "Allow USB debugging?" and nobody taps it: stay silent.
                self.daemon.pending_keys.append(key_line)

    def _on_open(self, message: Message) -> None:
        """OPEN(host id, 0, "service\\0"): OKAY and start the service, or CLSE if unknown."""
        if message.arg0 == 0:
            return
        name = message.data.rstrip(b"\0").decode(errors="replace")
        self.daemon.services_opened.append(name)
        handler = self.daemon._find_service(name)
        if handler is None:
            self.send(Message(A_CLSE, 0, message.arg0))
            return
        stream = Stream(self, next(self._ids), message.arg0, name)
        with self._streams_lock:
            self._streams[stream.local_id] = stream
        self.send(Message(A_OKAY, stream.local_id, stream.remote_id))
        thread = threading.Thread(target=self._run_service, args=(stream, handler), daemon=True,
                                  name=f"fakeadbd-conn{self.number}-{name.split(':')[0]}")
        self._service_threads = [t for t in self._service_threads if t.is_alive()] + [thread]
        thread.start()

    def _run_service(self, stream: Stream, handler: Callable[[Stream], None]) -> None:
        try:
            handler(stream)
        except StreamClosed:
            pass
        except Exception as exc:  # a bug in the fake: make it visible to the test
            log.exception("service %r failed", stream.service)
            self.daemon._record_error(f"service {stream.service!r} failed: {exc!r}")
        finally:
            stream.close()
