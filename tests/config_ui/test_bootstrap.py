"""First start: the admin password is generated, shown once, and `make run` repeats it."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import PasswordHasher

from services.config_ui.__main__ import first_admin, run
from services.config_ui.settings import ConfigUiSettings
from services.config_ui.users import UserStore
from services.launcher import ADMIN_PASSWORD_LINE


def store(tmp_path: Path) -> UserStore:
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    return UserStore(tmp_path / "ui.sqlite", hasher=hasher)


def test_first_start_prints_a_generated_password_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = store(tmp_path)
    first_admin(users, ConfigUiSettings())
    match = ADMIN_PASSWORD_LINE.search(capsys.readouterr().out)
    assert match is not None
    user, password = match.groups()
    assert users.authenticate(user, password) is not None
    assert users.get_user(user).must_change_password  # type: ignore[union-attr]
    first_admin(users, ConfigUiSettings())
    assert ADMIN_PASSWORD_LINE.search(capsys.readouterr().out) is None


def test_password_file_sets_the_first_password_and_is_not_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-secret-file\n")
    users = store(tmp_path)
    first_admin(users, ConfigUiSettings(ui_admin_password_file=str(secret)))
    assert "from-a-secret-file" not in capsys.readouterr().out
    admin = users.authenticate("admin", "from-a-secret-file")
    assert admin is not None and admin.must_change_password


@pytest.mark.parametrize("content", [None, "short"])
def test_an_unusable_password_file_stops_the_start_with_a_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | None
) -> None:
    secret = tmp_path / "pw"
    if content is not None:
        secret.write_text(content)
    settings = ConfigUiSettings(data_dir=str(tmp_path), ui_admin_password_file=str(secret))
    assert run(settings) == 2
    assert f"cannot create the first admin from {secret}" in caplog.text
