"""Settings every browser test shares."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

# How long a retrying assertion (`expect(...)`) waits for the page to get there. Playwright's 5 s
# is short for a page whose answer comes from a server, IMAP or SMTP on a loaded machine (CI runs
# the suite on 2 busy cores); a wait only ends early when the expected state is reached, so a
# longer one costs a passing test nothing. Actions and navigations keep Playwright's 30 s.
EXPECT_TIMEOUT_MS = 15_000


@pytest.fixture(autouse=True, scope="session")
def _patient_assertions() -> None:
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
