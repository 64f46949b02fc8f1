"""What the browser tests share: the web application coming up, and an admin's first login
(log in with the initial password, then change it, as the application demands)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.system.agents import wait_until

OWN_PASSWORD = "admins-own-password"


def ui_is_up(base: str, timeout_s: float = 60.0) -> bool:
    """Whether `/healthz` answers within `timeout_s` (start-up imports are slow on a loaded
    machine)."""

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return wait_until(up, timeout_s)


def first_login(page: Any, base: str, path: str, password: str) -> None:
    """Open `path`, be sent to the login, log in as admin and change the initial password to
    OWN_PASSWORD; the page is then on the account page."""
    from playwright.sync_api import expect

    page.goto(f"{base}{path}")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill('input[name="username"]', "admin")
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    expect(page).to_have_url(re.compile(r"/account$"))
    page.fill('input[name="current_password"]', password)
    page.fill('input[name="new_password"]', OWN_PASSWORD)
    page.fill('input[name="confirm_password"]', OWN_PASSWORD)
    page.click('[data-testid="change-password"]')
    expect(page.get_by_text("Password changed")).to_be_visible()
