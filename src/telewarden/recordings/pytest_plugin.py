"""pytest plugin (entry point `pytest11`): the `telewarden` fixture for asserting on recorded flows.

    def test_console_keeps_its_promises(telewarden):
        rec = telewarden.load("flows.mitm")
        rec.assert_clean()
        assert rec.find(vendor="hasura", kind="cli", match={"data": {"command": "hasura version"}})

Options: --telewarden-rules PATH (repeatable), --telewarden-no-bundled.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .testing import Checker


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("telewarden")
    group.addoption("--telewarden-rules", action="append", default=[], metavar="PATH",
                    help="rule pack file or folder for the telewarden fixture (repeatable)")
    group.addoption("--telewarden-no-bundled", action="store_true", help="do not load the bundled packs")


@pytest.fixture(scope="session")
def telewarden(pytestconfig: pytest.Config) -> Checker:
    """A Checker with the bundled packs (plus --telewarden-rules), compiled once per session."""
    rules = [Path(p) for p in pytestconfig.getoption("telewarden_rules")]
    return Checker(rules, bundled=not pytestconfig.getoption("telewarden_no_bundled"))
