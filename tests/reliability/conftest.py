"""Prints the reliability figures at the end of the session, whether the run passed or not."""

from __future__ import annotations

import pytest

from tests.reliability.figures import REPORTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.section("reliability figures")
        for report in REPORTS:
            terminalreporter.write_line(report)
            terminalreporter.write_line("")
