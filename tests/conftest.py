"""pytest hooks for the whole suite."""
from __future__ import annotations

import sys


def pytest_terminal_summary(terminalreporter) -> None:
    """Launches that crashed in native code and ran once more (tests/horovod_output.py): always shown."""
    crashes = []
    for name in ("horovod_output", "tests.horovod_output"):   # imported both ways by the test modules
        mod = sys.modules.get(name)
        crashes += getattr(mod, "CRASHES", []) if mod is not None else []
    if crashes:
        terminalreporter.section("native crashes (each launch was run once more)", sep="=", yellow=True, bold=True)
        for line in crashes:
            terminalreporter.write_line(line)
