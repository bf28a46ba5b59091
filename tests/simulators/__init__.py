"""Loopback HTTP simulators of vendor APIs, for contract and reliability tests."""
