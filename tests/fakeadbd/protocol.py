"""The ADB wire format: message headers, commands, and the framings used inside streams.

Everything here is pure data and byte packing; no sockets. Facts come from AOSP's
`packages/modules/adb` (protocol.txt, SYNC.TXT, shell_protocol.h, file_sync_protocol.h).

A message is a 24-byte little-endian header followed by `data_length` bytes of payload::

    command      u32   four ASCII letters read as a little-endian integer ("CNXN", ...)
    arg0, arg1   u32   meaning depends on the command (usually local id, remote id)
    data_length  u32
    data_check   u32   sum of payload bytes; 0 once both sides speak version >= 0x01000001
    magic        u32   command ^ 0xFFFFFFFF
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


def _cmd(name: bytes) -> int:
    """The u32 that four ASCII letters are on the wire."""
    return struct.unpack("<I", name)[0]


A_CNXN = _cmd(b"CNXN")
A_AUTH = _cmd(b"AUTH")
A_OPEN = _cmd(b"OPEN")
A_OKAY = _cmd(b"OKAY")
A_WRTE = _cmd(b"WRTE")
A_CLSE = _cmd(b"CLSE")
A_STLS = _cmd(b"STLS")
A_SYNC = _cmd(b"SYNC")
KNOWN_COMMANDS = {A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_WRTE, A_CLSE, A_STLS, A_SYNC}

# Protocol versions: the oldest, and the one from which checksums are skipped (0).
A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001

MAX_PAYLOAD_V1 = 4 * 1024  # CNXN/AUTH before the peer's maximum is known
MAX_PAYLOAD = 1024 * 1024  # what this daemon offers, as modern adbd does

# AUTH message types (arg0).
AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3
TOKEN_SIZE = 20

HEADER = struct.Struct("<6I")


def command_name(command: int) -> str:
    """'CNXN' for A_CNXN; a hex number for garbage."""
    raw = struct.pack("<I", command)
    return raw.decode("ascii") if raw.isalpha() else f"0x{command:08x}"


def checksum(data: bytes) -> int:
    """The legacy payload checksum: the sum of all bytes, modulo 2**32."""
    return sum(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Message:
    """One ADB message: header fields plus payload."""

    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    def pack(self, with_checksum: bool) -> bytes:
        """Header and payload as sent; `with_checksum` is False once both sides skip checksums."""
        check = checksum(self.data) if with_checksum else 0
        header = HEADER.pack(self.command, self.arg0, self.arg1, len(self.data), check,
                             self.command ^ 0xFFFFFFFF)
        return header + self.data

    def __str__(self) -> str:
        shown = self.data[:40]
        more = "..." if len(self.data) > 40 else ""
        return f"{command_name(self.command)}({self.arg0}, {self.arg1}, {shown!r}{more})"


class ProtocolError(Exception):
    """The peer sent bytes that are not valid ADB; the connection is dropped."""


@dataclass(frozen=True)
class Header:
    """A parsed 24-byte header (the payload is read separately)."""

    command: int
    arg0: int
    arg1: int
    data_length: int
    data_check: int

    @classmethod
    def parse(cls, raw: bytes, max_payload: int) -> Header:
        """Check magic, command and length; raise ProtocolError naming what is wrong."""
        command, arg0, arg1, length, check, magic = HEADER.unpack(raw)
        if magic != command ^ 0xFFFFFFFF:
            raise ProtocolError(f"bad magic 0x{magic:08x} for command {command_name(command)}")
        if command not in KNOWN_COMMANDS:
            raise ProtocolError(f"unknown command {command_name(command)}")
        if length > max_payload:
            raise ProtocolError(f"{command_name(command)} payload of {length} bytes exceeds "
                                f"the maximum of {max_payload}")
        return cls(command, arg0, arg1, length, check)

    def verify(self, data: bytes) -> None:
        """Accept a zero checksum (modern hosts) or a correct byte sum (legacy hosts, adb-shell)."""
        if self.data_check not in (0, checksum(data)):
            raise ProtocolError(f"{command_name(self.command)} checksum 0x{self.data_check:08x} "
                                f"!= 0x{checksum(data):08x} (sum of payload bytes)")


# ---- shell protocol v2 ("shell,v2,...:"): packets of id u8 + length u32 LE + data ----

SHELL_STDIN = 0
SHELL_STDOUT = 1
SHELL_STDERR = 2
SHELL_EXIT = 3  # data: one byte, the exit status
SHELL_CLOSE_STDIN = 4
SHELL_WINDOW_SIZE_CHANGE = 5  # data: "rowsxcols,xpixelsxypixels" text; ignored here
SHELL_HEADER = struct.Struct("<BI")


def shell_packet(packet_id: int, data: bytes) -> bytes:
    """One shell-v2 packet."""
    return SHELL_HEADER.pack(packet_id, len(data)) + data


# ---- sync ("sync:"): requests are id(4 ASCII) + u32 length + payload ----

SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
SYNC_REQUEST = struct.Struct("<4sI")
# STAT v1 reply: "STAT" mode size mtime (all u32; lstat() semantics, zeros when missing).
SYNC_STAT_V1 = struct.Struct("<4s3I")
# STA2/LST2 reply and DNT2 entry head: id error dev ino mode nlink uid gid size atime mtime ctime.
SYNC_STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
# DENT entry head: "DENT" mode size mtime namelen, then the name.
SYNC_DENT_V1 = struct.Struct("<4s4I")
SYNC_DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")
