"""Load benchmark of the registration service on the embedded Temporal dev server.

``python -m bench`` (or ``make bench``) runs registrations end to end (start, read the code from
the outbox, activate) against a baseline workflow of the same shape with no-op activities, so the
cost of orchestration and the cost of the registration's own work can be told apart. See
``docs/benchmarks.md`` for the method and the measured figures.
"""
