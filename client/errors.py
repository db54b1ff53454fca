"""Errors of the client package. Each is shown to the user as one line, never a traceback.

Hierarchy (with the stable ``code`` a ``--json`` error carries and the exit code)::

    ClientError                 root; ``str(error)`` is the one-line message     error        1
    ├── UsageError              a bad command line, or it names nothing known   usage        2
    ├── KeystoreError           keystore unreadable, or no passphrase available keystore     1
    │   └── WrongPassphrase                                                     wrong_passphrase 1
    ├── LinkError               not an invite link, or a damaged one            bad_link     1
    ├── Unreachable             the server cannot be reached                    unreachable  3
    ├── ServerError             the server refused: ``code`` is the server's stable code  1
    └── VerificationError       the server sent something that fails E2E checks verification 4

:class:`ExitCode` is the one table of the ``salon`` command's exit codes (README, "The
command line"); :data:`JSON_ERROR_CODES` lists every code a ``--json`` error may carry.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit code of ``salon``. Stable: scripts switch on them."""

    OK = 0
    FAILED = 1  # refused (server, keystore, link, permissions); web verify: the files differ
    USAGE = 2  # a bad command line, or it names a space, room or member you do not have
    UNREACHABLE = 3  # the server cannot be reached, or went away
    UNVERIFIED = 4  # the server sent something that fails the end-to-end checks
    ENDED = 5  # call: removed, banned, denied, locked or full; web verify: the build failed
    INTERRUPTED = 130  # Ctrl-C


class ClientError(Exception):
    exit_code: int = ExitCode.FAILED
    code: str = "error"


class UsageError(ClientError):
    exit_code = ExitCode.USAGE
    code = "usage"


class KeystoreError(ClientError):
    code = "keystore"


class WrongPassphrase(KeystoreError):
    code = "wrong_passphrase"


class LinkError(ClientError):
    code = "bad_link"


class Unreachable(ClientError):
    exit_code = ExitCode.UNREACHABLE
    code = "unreachable"


class ServerError(ClientError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class VerificationError(ClientError):
    exit_code = ExitCode.UNVERIFIED
    code = "verification"


# The codes of the client's own errors; a ServerError carries the server's (protocol/errors.py
# ErrorCode, plus "shutdown" when the server stops). Never rename one.
JSON_ERROR_CODES = (
    "error",
    "usage",
    "keystore",
    "wrong_passphrase",
    "bad_link",
    "unreachable",
    "verification",
    "ice_failed",
    "build_failed",
    "interrupted",
)
