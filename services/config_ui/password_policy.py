"""What a password a user chooses for themselves must be (pure).

NIST SP 800-63B §5.1.1.2 (memorized secrets): at least 8 characters (here 10), no composition
rules, and a check against values known to be commonly used, expected or compromised, with the
reason shown. The check is zxcvbn (Dropbox's estimator: frequency lists of common passwords,
names and words, keyboard patterns, dates, repeats, with the user's own name and the product's
words added), which says in words what makes a password weak. A password chosen to replace a
one-time or reset password must also differ from it.
"""

from __future__ import annotations

from zxcvbn import zxcvbn  # type: ignore[import-untyped]  # ships no type hints

PASSWORD_MIN_CHARS = 10
PASSWORD_MAX_CHARS = 1024
STRENGTH_MIN_SCORE = 3
"""zxcvbn's 0-4 scale: 3 is "safely unguessable: moderate protection from offline slow-hash
scenario" (more than 10^8 guesses)."""
PRODUCT_WORDS = ("bms", "battery", "admin", "password", "operator", "viewer")
ZXCVBN_MAX_CHARS = 100
"""zxcvbn's time grows with the length; past this a password is long enough."""


def length_problem(username: str, password: str) -> str | None:
    """Rules for every password, one-time ones too."""
    if len(password) < PASSWORD_MIN_CHARS:
        return f"the password needs at least {PASSWORD_MIN_CHARS} characters"
    if len(password) > PASSWORD_MAX_CHARS:
        return f"the password may have at most {PASSWORD_MAX_CHARS} characters"
    if password.strip().lower() == username.strip().lower():
        return "the password must not be the user name"
    return None


def chosen_password_problem(username: str, password: str, *, current: str | None) -> str | None:
    """Why `password` may not be the one `username` chooses for themselves, or None.

    `current`: the password it replaces (the one-time one after a first login or a reset)."""
    problem = length_problem(username, password)
    if problem is not None:
        return problem
    if current is not None and password == current:
        return "the new password must differ from the current one"
    if len(password) > ZXCVBN_MAX_CHARS:
        return None
    result = zxcvbn(password, user_inputs=[username, *PRODUCT_WORDS])
    if result["score"] >= STRENGTH_MIN_SCORE:
        return None
    feedback = result["feedback"]
    hints = [feedback.get("warning") or "", *feedback.get("suggestions", [])]
    why = " ".join(h.strip() for h in hints if h and h.strip())
    return "the password is too easy to guess" + (f": {why}" if why else "")
