"""Selective forwarding unit: forwards end-to-end encrypted media it cannot decrypt."""
