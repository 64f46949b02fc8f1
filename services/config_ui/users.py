"""Users, roles, password hashing, sessions, CSRF tokens and login throttling, in SQLite.

Passwords are stored as argon2id hashes and session tokens as SHA-256 digests, so a copy of
the database file lets nobody log in or take over a session.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.config_ui.config_store import migrate, open_database, transaction
from services.config_ui.password_policy import (
    chosen_password_problem,
    length_problem,
)

Role = Literal["viewer", "operator", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 0, "operator": 1, "admin": 2}
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")

USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
USERNAME_RULE = (
    "2 to 32 characters of lower-case letters, digits, '_', '.' or '-', starting with a letter"
)
INITIAL_ADMIN = "admin"

THROTTLE_AFTER_FAILURES = 5
THROTTLE_FIRST_S = 30.0
THROTTLE_MAX_S = 15 * 60.0
# failure counters of names nobody has tried for a day are dropped, so guessing many
# different user names cannot grow the table without bound
THROTTLE_FORGET_S = 24 * 3600.0
_THROTTLE_KEY_CHARS = 64
_TOKEN_MAX_CHARS = 256

SCHEMA_COMPONENT = "users"
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE users (
            username             TEXT PRIMARY KEY,
            role                 TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
            password_hash        TEXT NOT NULL,
            created_ts           REAL NOT NULL,
            created_by           TEXT NOT NULL,
            must_change_password INTEGER NOT NULL DEFAULT 0
        )
        """,
        """
        CREATE TABLE sessions (
            token_sha256 TEXT PRIMARY KEY,
            csrf_token   TEXT NOT NULL,
            username     TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
            created_ts   REAL NOT NULL,
            last_seen_ts REAL NOT NULL
        )
        """,
        "CREATE INDEX sessions_by_user ON sessions (username)",
        """
        CREATE TABLE login_failures (
            username        TEXT PRIMARY KEY,
            failures        INTEGER NOT NULL,
            lockouts        INTEGER NOT NULL,
            locked_until    REAL NOT NULL,
            last_failure_ts REAL NOT NULL
        )
        """,
    ),
}


def role_allows(role: Role, needed: Role) -> bool:
    """True when `role` may do what `needed` may (an unknown role may do nothing)."""
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[needed]


@dataclass(frozen=True)
class User:
    username: str
    role: Role
    created_ts: float
    created_by: str
    must_change_password: bool


@dataclass(frozen=True)
class Session:
    token: str
    csrf_token: str
    username: str
    role: Role
    """Read from the users table on every lookup, so a role change applies at once."""
    created_ts: float
    last_seen_ts: float
    must_change_password: bool = False
    """Read with the role: until the user sets their own password, nothing else is allowed."""


class LoginThrottled(Exception):  # noqa: N818  (the name says what happened)
    """Too many failed logins for this user name; no password is checked until it expires."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many failed logins; try again in {retry_after_s:.0f} s")


class UserError(ValueError):
    """A user operation that is not allowed, in words for the person who asked for it."""


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _throttle_key(name: str, client: str) -> str:
    return f"{name[:_THROTTLE_KEY_CHARS]}@{client[:64]}" if client else name[:_THROTTLE_KEY_CHARS]


def _throttle_delay_s(lockouts: int) -> float:
    return min(THROTTLE_FIRST_S * 2.0 ** min(lockouts - 1, 32), THROTTLE_MAX_S)


def _user(row: sqlite3.Row) -> User:
    return User(
        username=str(row["username"]),
        role=cast(Role, row["role"]),
        created_ts=float(row["created_ts"]),
        created_by=str(row["created_by"]),
        must_change_password=bool(row["must_change_password"]),
    )


def _check_role(role: str) -> Role:
    if role not in ROLE_RANK:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    return cast(Role, role)


def check_username(username: str) -> None:
    if not USERNAME_RE.match(username):
        raise UserError(f"user name {username!r} is not valid: use {USERNAME_RULE}")


def check_password(username: str, password: str) -> None:
    """The rules of every password (one-time ones too); see `password_policy`."""
    problem = length_problem(username, password)
    if problem is not None:
        raise UserError(problem)


class UserStore:
    """Accounts and sessions in one SQLite file (may be the config store's); thread-safe.

    `set_password` ends every session of that user (except `keep_token`, when given).
    Password hashing and checking run outside the store's lock, so a slow login does not
    hold up other requests.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        session_idle_s: float = 8 * 3600,
        session_max_s: float = 24 * 3600,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._clock = clock
        self._session_idle_s = session_idle_s
        self._session_max_s = session_max_s
        self._hasher = hasher if hasher is not None else PasswordHasher()
        # an unknown user name costs the same hash check as a known one, so the response
        # time does not tell which names exist
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self._lock = threading.Lock()
        self._conn = open_database(path)
        try:
            migrate(self._conn, SCHEMA_COMPONENT, _MIGRATIONS)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> UserStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- users -----------------------------------------------------------------------------

    def _row(self, username: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(
            "SELECT * FROM users WHERE username = ?", (username,)
        ).fetchone()
        return row

    def _existing(self, username: str) -> sqlite3.Row:
        row = self._row(username)
        if row is None:
            raise UserError(f"there is no user {username!r}")
        return row

    def _admins(self) -> int:
        row = self._conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetchone()
        return int(row[0])

    def ensure_admin(self, initial_password: str | None = None) -> str | None:
        """Create the user "admin" when there are no users; the password it set, else None.

        Without `initial_password` a random one is generated. Either way it must be changed
        at the first login: it was shown on a console or sits in a secret file, so others may
        know it. There is never a default password.
        """
        with self._lock:
            if self._conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None:
                return None
        password = secrets.token_urlsafe(12) if initial_password is None else initial_password
        check_password(INITIAL_ADMIN, password)
        password_hash = self._hasher.hash(password)
        with self._lock, transaction(self._conn):
            if self._conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None:
                return None  # another process got there first
            self._conn.execute(
                "INSERT INTO users (username, role, password_hash, created_ts, created_by, "
                "must_change_password) VALUES (?, 'admin', ?, ?, 'system', ?)",
                (INITIAL_ADMIN, password_hash, self._clock(), 1),
            )
        return password

    def create_user(
        self,
        username: str,
        password: str,
        role: Role,
        *,
        created_by: str,
        must_change_password: bool = False,
    ) -> User:
        check_username(username)
        role = _check_role(role)
        check_password(username, password)
        password_hash = self._hasher.hash(password)
        created_ts = self._clock()
        with self._lock:
            try:
                with transaction(self._conn):
                    self._conn.execute(
                        "INSERT INTO users (username, role, password_hash, created_ts, "
                        "created_by, must_change_password) VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            username,
                            role,
                            password_hash,
                            created_ts,
                            created_by,
                            int(must_change_password),
                        ),
                    )
            except sqlite3.IntegrityError as exc:
                raise UserError(f"user {username!r} already exists") from exc
        return User(username, role, created_ts, created_by, must_change_password)

    def list_users(self) -> list[User]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM users ORDER BY username").fetchall()
        return [_user(row) for row in rows]

    def get_user(self, username: str) -> User | None:
        with self._lock:
            row = self._row(username)
        return None if row is None else _user(row)

    def set_role(self, username: str, role: Role, *, by: str) -> User:
        """Refuses to demote the last admin."""
        role = _check_role(role)
        with self._lock, transaction(self._conn):
            row = self._existing(username)
            if row["role"] == "admin" and role != "admin" and self._admins() <= 1:
                raise UserError(f"{username!r} is the last admin; make another user admin first")
            self._conn.execute("UPDATE users SET role = ? WHERE username = ?", (role, username))
            updated = self._existing(username)
        return _user(updated)

    def set_password(
        self,
        username: str,
        password: str,
        *,
        by: str,
        keep_token: str | None = None,
        current: str | None = None,
    ) -> None:
        """Set a new password and end the user's sessions (all but `keep_token`).

        Set by the user: it must also pass the strength check and differ from `current` (the
        password it replaces), and must_change_password is cleared. Set by someone else (an
        admin resetting it): the user must change it at the next login, as another person
        knows it.
        """
        if by == username:
            problem = chosen_password_problem(username, password, current=current)
            if problem is not None:
                raise UserError(problem)
        check_password(username, password)
        with self._lock:
            self._existing(username)
        password_hash = self._hasher.hash(password)
        keep = _token_digest(keep_token) if keep_token else ""
        with self._lock, transaction(self._conn):
            self._existing(username)
            self._conn.execute(
                "UPDATE users SET password_hash = ?, must_change_password = ? WHERE username = ?",
                (password_hash, int(by != username), username),
            )
            self._conn.execute(
                "DELETE FROM sessions WHERE username = ? AND token_sha256 != ?", (username, keep)
            )

    def delete_user(self, username: str, *, by: str) -> None:
        """Refuses to delete yourself or the last admin; the user's sessions end with it."""
        if username == by:
            raise UserError("you cannot delete your own account")
        with self._lock, transaction(self._conn):
            row = self._existing(username)
            if row["role"] == "admin" and self._admins() <= 1:
                raise UserError(f"{username!r} is the last admin and cannot be deleted")
            self._conn.execute("DELETE FROM users WHERE username = ?", (username,))

    # -- login -----------------------------------------------------------------------------

    def authenticate(self, username: str, password: str, *, client: str = "") -> User | None:
        """The user when the password matches, else None.

        After THROTTLE_AFTER_FAILURES consecutive failures for one user name (known or not)
        from one `client` address, every attempt of that pair raises LoginThrottled for 30 s;
        each further failure doubles that, up to 15 min. A successful login resets the count.
        Keyed by the address too, so guessing from one host cannot lock the user out of
        every other.
        """
        name = username.strip().lower()
        key = _throttle_key(name, client)
        now = self._clock()
        with self._lock, transaction(self._conn):
            self._count_attempt(key, now)
            row = self._row(name)
        # the attempt is counted as a failure before the (slow) check, so parallel guesses
        # cannot slip past the limit; a success clears the count again
        stored_hash = self._dummy_hash if row is None else str(row["password_hash"])
        try:
            self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        new_hash = (
            self._hasher.hash(password) if self._hasher.check_needs_rehash(stored_hash) else None
        )
        with self._lock, transaction(self._conn):
            self._conn.execute("DELETE FROM login_failures WHERE username = ?", (key,))
            if new_hash is not None:
                # only when the password was not changed meanwhile
                self._conn.execute(
                    "UPDATE users SET password_hash = ? WHERE username = ? AND password_hash = ?",
                    (new_hash, name, stored_hash),
                )
            fresh = self._row(name)
        return None if fresh is None else _user(fresh)

    def _count_attempt(self, key: str, now: float) -> None:
        row = self._conn.execute(
            "SELECT failures, lockouts, locked_until, last_failure_ts FROM login_failures "
            "WHERE username = ?",
            (key,),
        ).fetchone()
        failures, lockouts, locked_until = 0, 0, 0.0
        if row is not None:
            locked_until = float(row["locked_until"])
            if locked_until > now:
                raise LoginThrottled(locked_until - now)
            if now - float(row["last_failure_ts"]) < THROTTLE_FORGET_S:
                failures, lockouts = int(row["failures"]), int(row["lockouts"])
        failures += 1
        if failures >= THROTTLE_AFTER_FAILURES:
            lockouts += 1
            locked_until = now + _throttle_delay_s(lockouts)
        self._conn.execute(
            "DELETE FROM login_failures WHERE last_failure_ts < ? AND locked_until < ?",
            (now - THROTTLE_FORGET_S, now),
        )
        self._conn.execute(
            "INSERT INTO login_failures (username, failures, lockouts, locked_until, "
            "last_failure_ts) VALUES (?, ?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET "
            "failures = excluded.failures, lockouts = excluded.lockouts, "
            "locked_until = excluded.locked_until, last_failure_ts = excluded.last_failure_ts",
            (key, failures, lockouts, locked_until, now),
        )

    def throttled_for(self, username: str, *, client: str = "") -> float:
        """Seconds until `username` may try to log in again from `client`; 0 when it may."""
        key = _throttle_key(username.strip().lower(), client)
        with self._lock:
            row = self._conn.execute(
                "SELECT locked_until FROM login_failures WHERE username = ?", (key,)
            ).fetchone()
        return 0.0 if row is None else max(0.0, float(row[0]) - self._clock())

    # -- sessions --------------------------------------------------------------------------

    def create_session(self, user: User) -> Session:
        """A new session for `user`; only a digest of its token is stored."""
        token = secrets.token_urlsafe(32)
        csrf_token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock, transaction(self._conn):
            row = self._existing(user.username)
            self._conn.execute(
                "DELETE FROM sessions WHERE last_seen_ts <= ? OR created_ts <= ?",
                (now - self._session_idle_s, now - self._session_max_s),
            )
            self._conn.execute(
                "INSERT INTO sessions (token_sha256, csrf_token, username, created_ts, "
                "last_seen_ts) VALUES (?, ?, ?, ?, ?)",
                (_token_digest(token), csrf_token, user.username, now, now),
            )
        return Session(
            token, csrf_token, user.username, cast(Role, row["role"]), now, now,
            must_change_password=bool(row["must_change_password"]),
        )  # fmt: skip

    def get_session(self, token: str) -> Session | None:
        """The live session for `token`, its last_seen_ts updated; None when unknown, expired
        (idle or too old) or its user was deleted."""
        if not isinstance(token, str) or not token or len(token) > _TOKEN_MAX_CHARS:
            return None
        digest = _token_digest(token)
        now = self._clock()
        with self._lock, transaction(self._conn):
            row = self._conn.execute(
                "SELECT s.csrf_token, s.username, s.created_ts, s.last_seen_ts, u.role, "
                "u.must_change_password "
                "FROM sessions s JOIN users u ON u.username = s.username "
                "WHERE s.token_sha256 = ?",
                (digest,),
            ).fetchone()
            if row is None:
                return None
            created_ts = float(row["created_ts"])
            idle = now - float(row["last_seen_ts"])
            if idle >= self._session_idle_s or now - created_ts >= self._session_max_s:
                self._conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (digest,))
                return None
            self._conn.execute(
                "UPDATE sessions SET last_seen_ts = ? WHERE token_sha256 = ?", (now, digest)
            )
        return Session(
            token=token,
            csrf_token=str(row["csrf_token"]),
            username=str(row["username"]),
            role=cast(Role, row["role"]),
            created_ts=created_ts,
            last_seen_ts=now,
            must_change_password=bool(row["must_change_password"]),
        )

    def delete_session(self, token: str) -> None:
        with self._lock:
            self._conn.execute(
                "DELETE FROM sessions WHERE token_sha256 = ?", (_token_digest(token),)
            )

    def delete_sessions_of(self, username: str) -> int:
        """End every session of `username`; how many there were."""
        with self._lock:
            cursor = self._conn.execute("DELETE FROM sessions WHERE username = ?", (username,))
            return cursor.rowcount

    def check_csrf(self, session: Session, token: str | None) -> bool:
        """True when `token` is the session's CSRF token (compared in constant time)."""
        if not isinstance(token, str) or not token:
            return False
        return hmac.compare_digest(session.csrf_token.encode(), token.encode())
