"""RSA authentication as adbd does it: trusted keys in an `adb_keys` file, signed tokens.

An `adb_keys` line (and a host's `~/.android/adbkey.pub`) is
`base64(RSAPublicKey struct) user@host`, where the struct is Android's mincrypt layout::

    u32 modulus_size_words   64 for RSA-2048
    u32 n0inv                -1 / n mod 2**32 (Montgomery constant; unused here)
    u8  modulus[256]         little-endian
    u8  rr[256]              R**2 mod n, little-endian (unused here)
    u32 exponent             65537

The device sends 20 random bytes; the host signs them with PKCS#1 v1.5 as if they were a SHA-1
digest (no hashing: RSA_sign(NID_sha1, token)). Verification is a modular exponentiation, so
this module needs only the standard library.
"""

from __future__ import annotations

import base64
import binascii
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

_WORDS = 64  # RSA-2048
_MODULUS_BYTES = _WORDS * 4
_KEY_STRUCT = struct.Struct(f"<II{_MODULUS_BYTES}s{_MODULUS_BYTES}sI")
# DER DigestInfo prefix for SHA-1 (RFC 8017, section 9.2, note 1).
_SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")


@dataclass(frozen=True)
class PublicKey:
    """One RSA public key from an adb_keys line."""

    n: int
    e: int
    comment: str  # "user@host" as written after the base64 blob
    line: str  # the line as written, for appending to adb_keys

    @classmethod
    def parse(cls, line: str) -> PublicKey:
        """Parse `base64 [comment]`; raise ValueError with the reason."""
        fields = line.strip().split(None, 1)
        if not fields:
            raise ValueError("empty key line")
        try:
            blob = base64.b64decode(fields[0], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not base64: {exc}") from None
        if len(blob) != _KEY_STRUCT.size:
            raise ValueError(f"key blob is {len(blob)} bytes, expected {_KEY_STRUCT.size} (RSA-2048)")
        words, _n0inv, modulus, _rr, exponent = _KEY_STRUCT.unpack(blob)
        if words != _WORDS:
            raise ValueError(f"modulus_size_words is {words}, expected {_WORDS}")
        comment = fields[1] if len(fields) > 1 else ""
        return cls(int.from_bytes(modulus, "little"), exponent, comment, line.strip())

    def verify(self, token: bytes, signature: bytes) -> bool:
        """True when `signature` is PKCS#1 v1.5 over `token` taken as a SHA-1 digest."""
        size = (self.n.bit_length() + 7) // 8
        if len(signature) != size:
            return False
        s = int.from_bytes(signature, "big")
        if s >= self.n:
            return False
        recovered = pow(s, self.e, self.n).to_bytes(size, "big")
        digest_info = _SHA1_DIGEST_INFO + token
        expected = b"\x00\x01" + b"\xff" * (size - 3 - len(digest_info)) + b"\x00" + digest_info
        return recovered == expected


class KeyStore:
    """The device's trusted keys: an adb_keys file, re-read on every check as adbd does."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def keys(self) -> list[PublicKey]:
        """Every parseable key in the file (bad lines are skipped, as adbd skips them)."""
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            try:
                found.append(PublicKey.parse(line))
            except ValueError:
                continue
        return found

    def verify(self, token: bytes, signature: bytes) -> PublicKey | None:
        """The trusted key that made `signature`, or None."""
        for key in self.keys():
            if key.verify(token, signature):
                return key
        return None

    def add(self, key_line: str) -> PublicKey:
        """Trust a key (what tapping "Allow" on the phone does); returns the parsed key."""
        key = PublicKey.parse(key_line)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existing = self.path.read_text() if self.path.exists() else ""
            if existing and not existing.endswith("\n"):
                existing += "\n"
            self.path.write_text(existing + key.line + "\n")
        return key
