"""Fixtures of the browser tests (tests/browser/harness.py); skipped, with the reason, where
Debian's Chromium or Playwright is absent."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.harness import browser, site, skip_reason, visit

__all__ = ["browser", "site", "visit"]


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    reason = skip_reason()
    if reason is None:
        return
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=reason))
