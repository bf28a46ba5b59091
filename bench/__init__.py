"""Load benchmark of the registration service on the embedded Temporal dev server.

``python -m bench`` (``make bench``) runs registrations end to end against a baseline workflow of
the same shape with no-op activities (``baseline``), so orchestration and the registration's own
work can be told apart, and reports CPU per registration first. ``python -m bench.replay`` is the
one profiling aid. See ``docs/benchmarks.md`` for the method and the figures.
"""
