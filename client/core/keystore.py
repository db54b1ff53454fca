"""The local keystore: every secret this device holds, encrypted at rest.

File layout (``$SALON_HOME/keystore.salon``)::

    b"SALONKS1" | salt (16) | opslimit (u64 BE) | memlimit (u64 BE) | secretbox(data)

The key is Argon2id(passphrase, salt); ``data`` is MessagePack of :class:`KeystoreData`.
Writes go to a temporary file that is fsynced and renamed over the old one, under an
exclusive file lock (``flock``, or ``msvcrt`` on Windows: :mod:`client.core.filelock`) so
concurrent ``salon`` processes never lose each other's updates.

The passphrase comes from ``$SALON_PASSPHRASE``, else the first line of the file named by
``$SALON_PASSPHRASE_FILE``, else a prompt on a terminal.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, TypeVar

import msgspec
import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils
import platformdirs

from client.core.errors import KeystoreError, WrongPassphrase
from client.core.filelock import exclusive

MAGIC: Final = b"SALONKS1"
HEADER = struct.Struct(">8s16sQQ")
FILE_NAME: Final = "keystore.salon"
T = TypeVar("T")


class HeldRoomKey(msgspec.Struct, array_like=True):
    """A room key of one epoch at the oldest generation this device holds (later
    generations are derived from it; protocol.roomkeys)."""

    generation: int
    key: bytes


class SpaceMembership(msgspec.Struct):
    """One per-space identity. Nothing here links it to any other membership."""

    space_id: str
    server: str
    name: str
    display_name: str
    signing_seed: bytes
    box_secret: bytes
    space_keys: dict[int, bytes] = {}
    invite_secrets: dict[str, bytes] = {}  # invites this identity created: id -> secret
    room_keys: dict[str, dict[int, HeldRoomKey]] = {}  # room id -> epoch -> key
    head_seq: int = -1  # last verified chain head, to detect a server forking history
    head_hash: bytes = b""
    # The verified roster at head_seq (protocol.records.encode_roster), this device's trust
    # anchor: a command fetches only the records after it. Kept here, inside the encrypted
    # keystore, so it is integrity protected and always matches head_seq/head_hash.
    roster: bytes = b""
    state: dict[str, bytes] = {}  # per-feature data (rooms, calls) keyed by feature


class KeystoreData(msgspec.Struct):
    version: int = 1
    memberships: list[SpaceMembership] = []


def default_home() -> Path:
    env = os.environ.get("SALON_HOME")
    return Path(env) if env else Path(platformdirs.user_data_dir("salon", appauthor=False))


def passphrase_from_file(path: str) -> str:
    """The first line of ``path``, its line ending stripped (nothing else: spaces count)."""
    try:
        with open(path, encoding="utf-8", newline="") as file:
            line = file.readline()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise KeystoreError(f"cannot read SALON_PASSPHRASE_FILE {path}: {why}") from None
    line = line.removesuffix("\n").removesuffix("\r")
    if not line:
        raise KeystoreError(f"SALON_PASSPHRASE_FILE {path}: the first line is empty")
    return line


def passphrase_from_env_or_prompt(creating: bool) -> str:
    """``$SALON_PASSPHRASE``, else ``$SALON_PASSPHRASE_FILE``'s first line, else a prompt."""
    env = os.environ.get("SALON_PASSPHRASE")
    if env is not None:
        return env
    path = os.environ.get("SALON_PASSPHRASE_FILE")
    if path:
        return passphrase_from_file(path)
    if not os.isatty(0):
        raise KeystoreError(
            "no passphrase: set SALON_PASSPHRASE or SALON_PASSPHRASE_FILE, or run in a terminal"
        )
    if not creating:
        return getpass.getpass("Keystore passphrase: ")
    first = getpass.getpass("New keystore passphrase: ")
    if first != getpass.getpass("Repeat passphrase: "):
        raise KeystoreError("the passphrases differ")
    return first


class Keystore:
    def __init__(
        self,
        home: Path | None = None,
        passphrase: Callable[[bool], str] = passphrase_from_env_or_prompt,
        opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    ) -> None:
        self.home = home or default_home()
        self.path = self.home / FILE_NAME
        self._passphrase = passphrase
        self._opslimit = opslimit
        self._memlimit = memlimit
        self._key: bytes | None = None
        self._params: tuple[bytes, int, int] | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.home / "keystore.lock", "a") as lock, exclusive(lock):
            yield

    def _derive(self, params: tuple[bytes, int, int], creating: bool) -> bytes:
        """The key for (salt, opslimit, memlimit), derived once per process."""
        if self._key is None or self._params != params:
            salt, opslimit, memlimit = params
            secret = self._passphrase(creating).encode()
            self._key = nacl.pwhash.argon2id.kdf(
                nacl.secret.SecretBox.KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit
            )
            self._params = params
        return self._key

    def _read(self) -> KeystoreData:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return KeystoreData()
        except OSError as exc:
            raise KeystoreError(f"cannot read the keystore at {self.path}: {exc}") from None
        if len(blob) < HEADER.size or not blob.startswith(MAGIC):
            raise KeystoreError(f"{self.path} is not a Salon keystore")
        _, salt, opslimit, memlimit = HEADER.unpack_from(blob)
        key = self._derive((salt, opslimit, memlimit), creating=False)
        try:
            plain = nacl.secret.SecretBox(key).decrypt(blob[HEADER.size :])
        except nacl.exceptions.CryptoError:
            self._key = None
            raise WrongPassphrase(f"wrong passphrase for the keystore at {self.path}") from None
        try:
            return msgspec.msgpack.decode(plain, type=KeystoreData)
        except msgspec.DecodeError as exc:
            raise KeystoreError(f"the keystore at {self.path} is damaged: {exc}") from None

    def _write(self, data: KeystoreData) -> None:
        # Keep the file's own salt and limits (read just before, under the lock); a new
        # keystore gets a fresh salt and this object's limits.
        params = self._params or (
            nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES),
            self._opslimit,
            self._memlimit,
        )
        key = self._derive(params, creating=True)
        header = HEADER.pack(MAGIC, *params)
        blob = header + nacl.secret.SecretBox(key).encrypt(msgspec.msgpack.encode(data))
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if os.name == "nt":
            return  # a directory cannot be opened (or fsynced) there; the rename is durable
        dir_fd = os.open(self.home, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(self) -> KeystoreData:
        """A snapshot of the keystore (empty if there is none yet)."""
        with self._locked():
            return self._read()

    def update(self, change: Callable[[KeystoreData], T]) -> T:
        """Re-read, apply ``change`` and save, all under the lock; returns change's result."""
        with self._locked():
            data = self._read()
            result = change(data)
            self._write(data)
            return result
