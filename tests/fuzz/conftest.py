"""Hypothesis profiles of the fuzz tests (``docs/development.md``, "Fuzz tests").

- ``ci`` (chosen when ``CI`` is set, as CI's ``.ci/run`` has it): 100 examples a test (the
  server-touching ones fewer, ``scaled``), derandomized (the same examples every run, so CI
  never fails on an input a previous run did not try) and no example database.
- ``dev`` (the default elsewhere): the same counts with new random examples every run, and the
  example database in ``.hypothesis/`` (not committed), so a failure found locally is tried first
  on the next run until it is fixed.
- ``thorough`` (``HYPOTHESIS_PROFILE=thorough``): 20 times the examples, random, with the
  database: a search for new failures, minutes long.

``HYPOTHESIS_PROFILE`` picks any of them. No deadline: the machine's cores are shared, and a slow
example is not a failure here (the huge strings are bounded instead).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = 100
THOROUGH = 20
"""How many times the examples of ``ci`` and ``dev`` the ``thorough`` profile runs."""

settings.register_profile(
    "base",
    deadline=None,
    # The stack, the settings and monkeypatch are shared by a test's examples on purpose: each
    # example uses its own emails and files, and a worker per example would take seconds.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_base = settings.get_profile("base")
settings.register_profile(
    "ci", _base, max_examples=EXAMPLES, derandomize=True, database=None, print_blob=True
)
settings.register_profile("dev", _base, max_examples=EXAMPLES)
settings.register_profile("thorough", _base, max_examples=EXAMPLES * THOROUGH)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)


def scaled(examples: int) -> int:
    """``examples`` for a test that touches a server (fewer than ``EXAMPLES``), times
    ``THOROUGH`` under the ``thorough`` profile."""
    return examples * THOROUGH if PROFILE == "thorough" else examples
