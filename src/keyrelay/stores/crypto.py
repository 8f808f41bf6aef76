"""Keys at rest: how the SQLite and Redis stores encrypt the upstream keys they hold.

- **The secret** comes from ``KEYRELAY_SECRET_KEY`` (read by :mod:`keyrelay.config`, passed
  down as :class:`SecretSource`) or, when it is not set, from a key file: ``<store>.key`` next
  to a SQLite file, ``redis.key`` in the user's data directory for Redis, or
  ``[store] secret_file``. The file is created on first use with mode
  0600 holding 32 random bytes (base64url); its path is logged, never its content. Losing the
  secret loses the keys: nothing else can decrypt them.
- **Encryption**: AES-256-GCM, the key's id as associated data (a ciphertext moved to another
  row does not decrypt). Each write has its own 96-bit nonce: 64 random bits drawn per
  :class:`KeyCipher` and a 32-bit counter (NIST SP 800-38D §8.2.1's deterministic construction;
  the random field is drawn again before the counter wraps), so no nonce repeats under one
  secret short of ~2^32 cipher instances. Stored as ``v1.<base64(nonce|ct|tag)>``.
- **Lookups** use a keyed hash, BLAKE2b in its keyed (MAC) mode over ``pool NUL key``, 128
  bits: duplicates are found without decrypting anything, and the hash tells nothing to whoever
  lacks the secret. (An HMAC would do the same job at a higher cost per key, which a big
  import feels: docs/design.md, "Secrets".)
- Both keys are derived from the secret with HKDF-SHA256; a **fingerprint** (an HMAC of a
  constant) is stored with the data so a store opened with the wrong secret says so at once.
- **Rotation** (``keyrelay keys rotate-secret``): a new key file is written next to the old one
  as ``<file>.new`` first, the store re-encrypts every key in one transaction, then the new file
  replaces the old (an atomic rename). :meth:`KeyRing.settle` finishes or discards a rotation a
  crash interrupted, by the fingerprint the store holds.
"""

from __future__ import annotations

import binascii
import hashlib
import logging
import os
import secrets as _secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyrelay.exceptions import SecretMismatch, StoreError

__all__ = [
    "MIN_SECRET_LENGTH",
    "KeyCipher",
    "KeyRing",
    "SecretMismatch",
    "SecretSource",
    "fsync_dir",
    "key_ring",
    "new_secret",
    "write_key_file",
]

log = logging.getLogger("keyrelay.store")

MIN_SECRET_LENGTH = 32
_SEALED = "v1."


def new_secret() -> str:
    """32 random bytes, base64url: what a new key file holds."""
    return _secrets.token_urlsafe(32)


class KeyCipher:
    """AES-GCM encryption and a keyed hash, both derived from one secret."""

    __slots__ = ("_aead", "_count", "_field", "_mac", "fingerprint")

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"a secret for keys at rest needs at least {MIN_SECRET_LENGTH} characters")
        ikm = secret.encode()
        enc = HKDF(hashes.SHA256(), 32, salt=None, info=b"keyrelay keys at rest: aes-256-gcm").derive(ikm)
        self._mac = HKDF(hashes.SHA256(), 32, salt=None, info=b"keyrelay keys at rest: lookup").derive(ikm)
        self._aead = AESGCM(enc)
        self._field = os.urandom(8)
        self._count = 0
        self.fingerprint = hashlib.blake2b(b"keyrelay fingerprint", key=self._mac, digest_size=8).hexdigest()

    def seal(self, key_id: str, secret: str) -> str:
        self._count += 1
        if self._count >= 1 << 32:  # a fresh random field before the counter could repeat
            self._field, self._count = os.urandom(8), 1
        nonce = self._field + self._count.to_bytes(4, "big")
        ct = self._aead.encrypt(nonce, secret.encode(), key_id.encode())
        return _SEALED + binascii.b2a_base64(nonce + ct, newline=False).decode()

    def open(self, key_id: str, sealed: str) -> str:
        """The key in ``sealed``; :class:`SecretMismatch` when it does not decrypt with this secret."""
        try:
            if not sealed.startswith(_SEALED):
                raise ValueError("not sealed")
            raw = binascii.a2b_base64(sealed[3:])
            return self._aead.decrypt(raw[:12], raw[12:], key_id.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise SecretMismatch(
                f"key {key_id} does not decrypt with this secret (fingerprint {self.fingerprint}): the store was "
                "encrypted with another one (re-encrypted by `keyrelay keys rotate-secret`? restart with the new one)"
            ) from exc

    def lookup(self, pool: str, secret: str) -> str:
        """The keyed hash a key is found by (duplicates), without decrypting anything."""
        return hashlib.blake2b(f"{pool}\0{secret}".encode(), key=self._mac, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where the secret comes from: ``value`` (``KEYRELAY_SECRET_KEY``) if set, else the key
    file ``file`` (``None``: the store's default file). ``pending`` is a rotation's new secret
    (``KEYRELAY_NEW_SECRET_KEY``)."""

    value: str | None = field(default=None, repr=False)
    file: str | None = None
    pending: str | None = field(default=None, repr=False)


def _read_key_file(path: str) -> str:
    with open(path, encoding="ascii") as fh:
        value = fh.read().strip()
    if len(value) < MIN_SECRET_LENGTH:
        raise StoreError(f"the key file {path} is damaged (shorter than {MIN_SECRET_LENGTH} characters)")
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        log.warning("the key file %s can be read by others (mode %o): chmod 600 it", path, mode)
    return value


def write_key_file(path: str, value: str) -> bool:
    """Write ``value`` to a new file ``path`` with mode 0600, atomically (a temporary file,
    fsynced, then hard-linked into place): False, writing nothing, when ``path`` exists."""
    tmp = f"{path}.{os.getpid()}.{_secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(value + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path)
        return True
    finally:
        os.unlink(tmp)


def fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class KeyRing:
    """The secret a store opens with, and a rotation's pending one if a crash left it."""

    cipher: KeyCipher
    origin: str  # "KEYRELAY_SECRET_KEY" or "key file <path>": for messages, never the secret
    file: str | None = None  # the key file, when the secret comes from one
    pending: KeyCipher | None = None
    created: bool = False  # the key file was created just now

    def settle(self, stored: str | None, where: str, empty: bool) -> KeyCipher:
        """The cipher for a store holding fingerprint ``stored`` (None: none yet). Finishes a
        rotation that a crash cut short (the store already re-encrypted: the pending secret's
        fingerprint), drops a pending file the store never used; refuses any other secret
        unless the store holds no key (``empty``)."""
        pending_file = f"{self.file}.new" if self.file else None
        if stored is None or stored == self.cipher.fingerprint or empty:
            if pending_file and os.path.exists(pending_file) and (stored is None or stored == self.cipher.fingerprint):
                os.unlink(pending_file)  # a rotation that never reached the store
            return self.cipher
        if self.pending is not None and stored == self.pending.fingerprint:
            if pending_file and os.path.exists(pending_file):
                os.replace(pending_file, self.file or "")
                fsync_dir(pending_file)
                log.warning("finished an interrupted secret rotation: %s now holds the new secret", self.file)
            self.cipher, self.pending = self.pending, None
            return self.cipher
        raise SecretMismatch(
            f"the keys in {where} were encrypted with another secret (fingerprint {stored}); the secret from "
            f"{self.origin} has fingerprint {self.cipher.fingerprint}. Give the one the store was written with "
            "(KEYRELAY_SECRET_KEY or its key file): without it the keys cannot be read"
        )


def key_ring(source: SecretSource, default_file: str) -> KeyRing:
    """The secret of ``source``, creating the key file (``source.file`` or ``default_file``)
    on first use when no value is given."""
    if source.value:
        pending = KeyCipher(source.pending) if source.pending else None
        return KeyRing(KeyCipher(source.value), "KEYRELAY_SECRET_KEY", None, pending)
    path = source.file or default_file
    created = False
    if not os.path.exists(path):
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StoreError(f"cannot create the key file {path}: directory {parent} does not exist")
        created = write_key_file(path, new_secret())
        if created:
            log.info("created the key file %s for keys at rest (mode 0600): keep it, without it the keys "
                        "cannot be read", path)
    pending_path = f"{path}.new"
    pending = KeyCipher(_read_key_file(pending_path)) if os.path.exists(pending_path) else None
    return KeyRing(KeyCipher(_read_key_file(path)), f"key file {path}", path, pending, created)
