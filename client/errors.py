"""Errors of the client package. Each is shown to the user as one line, never a traceback.

Hierarchy::

    ClientError                 root; ``str(error)`` is the one-line message
    ├── UsageError              the command line names something that does not exist
    ├── KeystoreError           keystore unreadable, or no passphrase available
    │   └── WrongPassphrase
    ├── LinkError               not an invite link, or a damaged one
    ├── Unreachable             the server cannot be reached
    ├── ServerError             the server refused (``code`` is its stable error code)
    └── VerificationError       the server sent something that fails end-to-end checks
"""

from __future__ import annotations


class ClientError(Exception):
    exit_code = 1


class UsageError(ClientError):
    exit_code = 2


class KeystoreError(ClientError):
    pass


class WrongPassphrase(KeystoreError):
    pass


class LinkError(ClientError):
    pass


class Unreachable(ClientError):
    exit_code = 3


class ServerError(ClientError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class VerificationError(ClientError):
    exit_code = 4
