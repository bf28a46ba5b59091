"""Plumbing shared by the worker, the starter and the tools: settings, keys, ids, Temporal."""
