"""Errors of the client package. Each is shown to the user as one line, never a traceback.

Hierarchy (with the stable ``code`` a ``--json`` error carries and the exit code)::

    ClientError                 root; ``str(error)`` is the one-line message     error        1
    ├── UsageError              a bad command line, or it names nothing known   usage        2
    ├── KeystoreError           keystore unreadable, or no passphrase available keystore     1
    │   └── WrongPassphrase                                                     wrong_passphrase 1
    ├── LinkError               not an invite link, or a damaged one            bad_link     1
    ├── Unreachable             the server cannot be reached                    unreachable  3
    ├── ServerError             the server refused: ``code`` is the server's stable code  1
    │                           (``unavailable``, e.g. its database is down: 3)
    └── VerificationError       the server sent something that fails E2E checks verification 4

:class:`ExitCode` is the one table of the ``salon`` command's exit codes (README, "The
command line"); :class:`ClientCode` lists the client's own ``--json`` error codes.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """Every exit code of ``salon``. Stable: scripts switch on them."""

    OK = 0
    FAILED = 1  # refused (server, keystore, link, permissions); web verify: the files differ
    USAGE = 2  # a bad command line, or it names a space, room or member you do not have
    UNREACHABLE = 3  # the server cannot be reached, or went away
    UNVERIFIED = 4  # the server sent something that fails the end-to-end checks
    ENDED = 5  # call: removed, banned, denied, locked or full; web verify: the build failed
    INTERRUPTED = 130  # Ctrl-C


class ClientCode(StrEnum):
    """The stable codes of the client's own errors under ``--json`` (a ServerError carries
    the server's instead: protocol/errors.py ErrorCode). Never rename one."""

    ERROR = "error"
    USAGE = "usage"
    KEYSTORE = "keystore"
    WRONG_PASSPHRASE = "wrong_passphrase"
    BAD_LINK = "bad_link"
    UNREACHABLE = "unreachable"
    VERIFICATION = "verification"
    ICE_FAILED = "ice_failed"
    BUILD_FAILED = "build_failed"
    INTERRUPTED = "interrupted"


class ClientError(Exception):
    exit_code: int = ExitCode.FAILED
    code: str = ClientCode.ERROR


class UsageError(ClientError):
    exit_code = ExitCode.USAGE
    code = ClientCode.USAGE


class KeystoreError(ClientError):
    code = ClientCode.KEYSTORE


class WrongPassphrase(KeystoreError):
    code = ClientCode.WRONG_PASSPHRASE


class LinkError(ClientError):
    code = ClientCode.BAD_LINK


class Unreachable(ClientError):
    exit_code = ExitCode.UNREACHABLE
    code = ClientCode.UNREACHABLE


class ServerError(ClientError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        if code == "unavailable":  # e.g. its database is down: as good as unreachable, for now
            self.exit_code = ExitCode.UNREACHABLE


class VerificationError(ClientError):
    exit_code = ExitCode.UNVERIFIED
    code = ClientCode.VERIFICATION


# Every code a --json error may carry besides the server's (README, "Errors under --json").
JSON_ERROR_CODES = tuple(code.value for code in ClientCode)
