"""Encryption of secret values at rest: AES-256-GCM (``cryptography``'s AEAD).

A value is sealed with a random 96-bit nonce and, as associated data, its scope and
name: a ciphertext copied to another secret does not open. Each ciphertext is stored
with the id of the key that sealed it (``key_id``: the first 8 hex digits of the
key's SHA-256), so a box holding several keys opens any of them by id and seals with
the first: prepending a new key is a rotation without downtime.

Keys come from ``CYCLONE_SECRET_KEY`` (one or more base64 32-byte keys, comma
separated) or, when it is unset, from ``$CYCLONE_HOME/secret.key`` (same format),
made with mode 0600 at the first start. A malformed key, or a key file others may
read, is a ``SecretKeyError`` (a ``ConfigError``) naming the variable or the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import ConfigError, CycloneError

__all__ = ["KEY_FILE", "KEY_VARIABLE", "Sealed", "SecretBox", "SecretKeyError",
           "SecretOpenError", "key_id", "new_key", "write_key_file"]

KEY_VARIABLE = "CYCLONE_SECRET_KEY"
KEY_FILE = "secret.key"  # under CYCLONE_HOME, when the variable is unset
_NONCE = 12  # bytes: AES-GCM's 96-bit nonce


class SecretKeyError(ConfigError):
    """The secret key is malformed, unreadable, or does not open the stored secrets."""


class SecretOpenError(CycloneError):
    """A ciphertext did not open: no key of the box has its id, or it was altered or
    moved to another secret."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def new_key() -> str:
    """A fresh key, base64 (what ``CYCLONE_SECRET_KEY`` and the key file hold)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Sealed:
    """A sealed value as stored: base64 of nonce + ciphertext + tag, and the key's id."""

    ciphertext: str
    key_id: str


@dataclass(frozen=True)
class SecretBox:
    keys: tuple[bytes, ...] = field(repr=False)  # the first seals; any opens
    source: str  # where the keys came from: the variable's name or the file's path

    @classmethod
    def parse(cls, raw: str, source: str) -> SecretBox:
        """The keys in ``raw`` (comma-separated base64 32-byte keys) or SecretKeyError
        naming ``source`` (never the key itself)."""
        keys = []
        for n, part in enumerate(p.strip() for p in raw.split(",")):
            try:
                key = base64.b64decode(part, validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != 32:
                raise SecretKeyError(f"{source}: key {n + 1} is not a base64-encoded 32-byte "
                                     "key (make one with: head -c 32 /dev/urandom | base64)")
            keys.append(key)
        return cls(tuple(keys), source)

    @classmethod
    def load(cls, variable: str, home: Path, create: bool = True) -> SecretBox:
        """From ``variable`` (``CYCLONE_SECRET_KEY``'s value) when set, else from the key
        file under ``home``, made when missing and ``create``."""
        if variable.strip():
            return cls.parse(variable, KEY_VARIABLE)
        path = home / KEY_FILE
        if not path.exists():
            if not create:
                raise SecretKeyError(f"{KEY_VARIABLE} is not set and {path} does not exist")
            write_key_file(path, new_key(), exclusive=True)
        return cls.parse(_read_key_file(path), str(path))

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(key_id(k) for k in self.keys)

    def seal(self, scope: str, name: str, value: str) -> Sealed:
        nonce = secrets.token_bytes(_NONCE)
        sealed = AESGCM(self.keys[0]).encrypt(nonce, value.encode(), _aad(scope, name))
        return Sealed(base64.b64encode(nonce + sealed).decode(), key_id(self.keys[0]))

    def open(self, scope: str, name: str, sealed: Sealed) -> str:
        key = next((k for k in self.keys if key_id(k) == sealed.key_id), None)
        if key is None:
            raise SecretOpenError(f"secret {name!r}: sealed with key {sealed.key_id}, which "
                                  f"{self.source} does not hold")
        raw = base64.b64decode(sealed.ciphertext)
        try:
            return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], _aad(scope, name)).decode()
        except InvalidTag:
            raise SecretOpenError(f"secret {name!r}: its ciphertext does not open (altered, "
                                  "or copied from another secret)") from None

    def with_first(self, key: str) -> SecretBox:
        """This box with ``key`` (base64) prepended: it seals from now on."""
        return SecretBox((*SecretBox.parse(key, self.source).keys, *self.keys), self.source)


def _aad(scope: str, name: str) -> bytes:
    # NUL cannot occur in either part (a project name, an env variable name).
    return f"{scope}\0{name}".encode()


def _read_key_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretKeyError(f"{path}: others may read the secret key (mode "
                                 f"{stat.S_IMODE(mode):o}); chmod 600 it")
        return path.read_text().strip()
    except OSError as exc:
        raise SecretKeyError(f"{path}: cannot read the secret key ({exc.strerror})") from None


def write_key_file(path: Path, keys: str | Sequence[str], exclusive: bool = False) -> None:
    """Write ``keys`` to ``path`` with mode 0600, atomically: readers see the old file or
    the new one whole. ``exclusive``: leave a file that exists (another process made it
    first) as it is."""
    text = keys if isinstance(keys, str) else ",".join(keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text + "\n")
        if exclusive:
            try:
                os.link(temp, path)  # fails when it exists: the first writer wins
            except FileExistsError:
                pass
        else:
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
