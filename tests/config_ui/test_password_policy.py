"""Passwords users choose for themselves (NIST SP 800-63B §5.1.1.2, zxcvbn)."""

from __future__ import annotations

import pytest

from services.config_ui.password_policy import (
    PASSWORD_MIN_CHARS,
    chosen_password_problem,
    length_problem,
)


@pytest.mark.parametrize(
    "weak",
    ["password123", "1234567890", "qwertyuiop", "iloveyou2024", "olga-olga-olga", "olga19851985"],
)
def test_common_and_personal_passwords_are_refused_with_the_reason(weak: str) -> None:
    problem = chosen_password_problem("olga", weak, current=None)
    assert problem is not None and problem.startswith("the password is too easy to guess")


@pytest.mark.parametrize("strong", ["correct horse battery staple", "olga-own-password-2",
                                    "x7#Tq9!mZ2vL", "a" * 300 + "b"])  # fmt: skip
def test_unusual_passwords_pass(strong: str) -> None:
    assert chosen_password_problem("olga", strong, current=None) is None


def test_the_replaced_password_cannot_be_chosen_again() -> None:
    assert chosen_password_problem("olga", "one-time-Xy72kq", current="one-time-Xy72kq") == (
        "the new password must differ from the current one"
    )
    assert chosen_password_problem("olga", "one-time-Xy72kq", current="another-one-8821") is None


def test_length_and_user_name_rules_hold_for_every_password() -> None:
    assert length_problem("olga", "x" * (PASSWORD_MIN_CHARS - 1)) is not None
    assert (
        length_problem("longusername", "LongUserName") == "the password must not be the user name"
    )
    assert length_problem("olga", "x" * PASSWORD_MIN_CHARS) is None
