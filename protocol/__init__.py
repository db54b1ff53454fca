"""What the Salon server and its clients share: wire messages, signed records and the roster
rules, conference rules, key-derivation labels and error codes (docs/PROTOCOL.md).

This package imports nothing of ours (neither ``spaces`` nor ``client``): both sides import it.
"""
