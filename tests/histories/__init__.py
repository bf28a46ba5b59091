"""Recorded histories of every terminal path, replayed by ``tests/test_replay.py``."""
