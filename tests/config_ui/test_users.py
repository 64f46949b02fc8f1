"""Users, sessions, CSRF and login throttling on real SQLite files, with a fake clock."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from services.config_ui.users import (
    ROLE_RANK,
    LoginThrottled,
    Role,
    UserError,
    UserStore,
    role_allows,
)

IDLE_S = 600.0
MAX_S = 3600.0
PASSWORD = "correct horse battery"


def fast_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ui.sqlite"


def _open(db: Path, clock: FakeClock, hasher: PasswordHasher | None = None) -> UserStore:
    return UserStore(
        db,
        clock=clock,
        session_idle_s=IDLE_S,
        session_max_s=MAX_S,
        hasher=hasher or fast_hasher(),
    )


@pytest.fixture
def users(db: Path, clock: FakeClock) -> Iterator[UserStore]:
    store = _open(db, clock)
    yield store
    store.close()


@pytest.fixture
def admin_password(users: UserStore) -> str:
    password = users.ensure_admin()
    assert password is not None
    return password


def test_role_allows() -> None:
    assert list(ROLE_RANK) == ["viewer", "operator", "admin"]
    assert role_allows("admin", "operator")
    assert role_allows("operator", "operator")
    assert role_allows("operator", "viewer")
    assert not role_allows("viewer", "operator")
    assert not role_allows("operator", "admin")
    assert not role_allows("root", "viewer")  # type: ignore[arg-type]


def test_ensure_admin_only_once(users: UserStore, clock: FakeClock) -> None:
    password = users.ensure_admin()
    assert password is not None and len(password) >= 16
    assert users.ensure_admin() is None
    assert users.ensure_admin("another long password") is None
    admin = users.get_user("admin")
    assert admin is not None
    assert (admin.role, admin.must_change_password, admin.created_ts) == ("admin", True, clock.now)
    assert users.list_users() == [admin]


def test_generated_password_works_and_wrong_fails(users: UserStore, admin_password: str) -> None:
    user = users.authenticate("admin", admin_password)
    assert user is not None and user.username == "admin" and user.role == "admin"
    assert users.authenticate("admin", admin_password + "x") is None
    assert users.authenticate("admin", "") is None
    assert users.authenticate("nobody", admin_password) is None
    # user names are matched as typed on a keyboard, passwords exactly
    assert users.authenticate(" Admin ", admin_password) is not None
    assert users.authenticate("admin", admin_password.upper()) is None


def test_ensure_admin_with_a_given_password(users: UserStore) -> None:
    with pytest.raises(UserError, match="at least 10"):
        users.ensure_admin("short")
    assert users.list_users() == []
    assert users.ensure_admin(PASSWORD) == PASSWORD
    admin = users.authenticate("admin", PASSWORD)
    assert admin is not None and admin.must_change_password  # a secret file: others know it


def test_create_user_validation(users: UserStore, admin_password: str) -> None:
    bob = users.create_user("bob", PASSWORD, "operator", created_by="admin")
    assert (bob.username, bob.role, bob.created_by, bob.must_change_password) == (
        "bob",
        "operator",
        "admin",
        False,
    )
    assert users.get_user("bob") == bob
    assert users.get_user("nobody") is None
    for name in ("Bob", "b", "1bob", "bob smith", "x" * 33, "", "bob@site"):
        with pytest.raises(UserError, match="user name"):
            users.create_user(name, PASSWORD, "viewer", created_by="admin")
    with pytest.raises(UserError, match="at least 10"):
        users.create_user("carol", "123456789", "viewer", created_by="admin")
    with pytest.raises(UserError, match="must not be the user name"):
        users.create_user("carol.smith", "carol.smith", "viewer", created_by="admin")
    with pytest.raises(UserError, match="already exists"):
        users.create_user("bob", PASSWORD, "viewer", created_by="admin")
    with pytest.raises(UserError, match="unknown role"):
        users.create_user("carol", PASSWORD, "root", created_by="admin")  # type: ignore[arg-type]
    assert [u.username for u in users.list_users()] == ["admin", "bob"]
    assert users.create_user("c.d-e_f9", PASSWORD, "viewer", created_by="admin").role == "viewer"


def test_throttling_after_five_failures_and_its_expiry(
    users: UserStore, admin_password: str, clock: FakeClock
) -> None:
    for _ in range(5):
        assert users.authenticate("admin", "wrong password") is None
    with pytest.raises(LoginThrottled) as info:
        users.authenticate("admin", admin_password)  # not even the right password is checked
    assert info.value.retry_after_s == pytest.approx(30.0)
    assert users.throttled_for("admin") == pytest.approx(30.0)
    clock.advance(29.0)
    with pytest.raises(LoginThrottled) as info:
        users.authenticate("admin", admin_password)
    assert info.value.retry_after_s == pytest.approx(1.0)
    clock.advance(1.0)
    assert users.authenticate("admin", admin_password) is not None
    # a success resets the count: four more failures do not lock
    for _ in range(4):
        assert users.authenticate("admin", "wrong password") is None
    assert users.authenticate("admin", admin_password) is not None
    assert users.throttled_for("admin") == 0.0


def test_guessing_from_one_host_does_not_lock_the_user_out_of_another(
    users: UserStore, admin_password: str
) -> None:
    for _ in range(5):
        assert users.authenticate("admin", "wrong password", client="10.0.0.66") is None
    with pytest.raises(LoginThrottled):
        users.authenticate("admin", admin_password, client="10.0.0.66")
    assert users.throttled_for("admin", client="10.0.0.66") > 0
    assert users.throttled_for("admin", client="192.168.1.10") == 0.0
    assert users.authenticate("admin", admin_password, client="192.168.1.10") is not None


def test_throttle_doubles_up_to_fifteen_minutes(
    users: UserStore, admin_password: str, clock: FakeClock
) -> None:
    for _ in range(5):
        users.authenticate("admin", "wrong password")
    delays = []
    for _ in range(8):
        with pytest.raises(LoginThrottled) as info:
            users.authenticate("admin", "wrong password")
        delays.append(info.value.retry_after_s)
        clock.advance(info.value.retry_after_s)
        assert users.authenticate("admin", "wrong password") is None  # and locks again
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 900.0, 900.0]
    clock.advance(900.0)
    assert users.authenticate("admin", admin_password) is not None


def test_throttling_is_per_user_name_and_covers_unknown_names(
    users: UserStore, admin_password: str
) -> None:
    users.create_user("bob", PASSWORD, "viewer", created_by="admin")
    for _ in range(5):
        assert users.authenticate("ghost", "whatever123") is None
    with pytest.raises(LoginThrottled):
        users.authenticate("ghost", "whatever123")
    for _ in range(5):
        users.authenticate("bob", "wrong password")
    with pytest.raises(LoginThrottled):
        users.authenticate("bob", PASSWORD)
    assert users.authenticate("admin", admin_password) is not None


def test_old_failures_are_forgotten(
    users: UserStore, admin_password: str, clock: FakeClock
) -> None:
    for _ in range(4):
        users.authenticate("admin", "wrong password")
    clock.advance(2 * 24 * 3600.0)
    for _ in range(4):
        assert users.authenticate("admin", "wrong password") is None
    assert users.throttled_for("admin") == 0.0


def test_throttling_survives_reopening(db: Path, clock: FakeClock) -> None:
    with _open(db, clock) as users:
        users.ensure_admin(PASSWORD)
        for _ in range(5):
            users.authenticate("admin", "wrong password")
    with _open(db, clock) as users, pytest.raises(LoginThrottled):
        users.authenticate("admin", PASSWORD)


def test_hash_is_upgraded_when_the_parameters_change(db: Path, clock: FakeClock) -> None:
    with _open(db, clock) as users:
        users.ensure_admin(PASSWORD)

    def stored_hash() -> str:
        con = sqlite3.connect(db)
        try:
            row = con.execute("SELECT password_hash FROM users WHERE username = 'admin'").fetchone()
            return str(row[0])
        finally:
            con.close()

    assert "t=1" in stored_hash()
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    with _open(db, clock, stronger) as users:
        assert users.authenticate("admin", PASSWORD) is not None
        assert "m=16,t=2" in stored_hash()
        assert users.authenticate("admin", PASSWORD) is not None


def test_sessions_expire_when_idle(users: UserStore, admin_password: str, clock: FakeClock) -> None:
    admin = users.authenticate("admin", admin_password)
    assert admin is not None
    session = users.create_session(admin)
    assert (session.username, session.role) == ("admin", "admin")
    assert session.token != session.csrf_token
    clock.advance(IDLE_S - 1.0)
    seen = users.get_session(session.token)
    assert seen is not None
    assert seen.last_seen_ts == clock.now
    assert (seen.created_ts, seen.csrf_token) == (session.created_ts, session.csrf_token)
    clock.advance(IDLE_S - 1.0)  # still within the idle time of the last request
    assert users.get_session(session.token) is not None
    clock.advance(IDLE_S)
    assert users.get_session(session.token) is None
    assert users.get_session(session.token) is None  # and it is gone


def test_sessions_expire_at_their_maximum_age(
    users: UserStore, admin_password: str, clock: FakeClock
) -> None:
    admin = users.authenticate("admin", admin_password)
    assert admin is not None
    session = users.create_session(admin)
    for _ in range(int(MAX_S // (IDLE_S / 2)) - 1):
        clock.advance(IDLE_S / 2)
        assert users.get_session(session.token) is not None
    clock.advance(IDLE_S / 2)
    assert clock.now - session.created_ts == MAX_S
    assert users.get_session(session.token) is None


def test_unknown_deleted_and_garbage_tokens(users: UserStore, admin_password: str) -> None:
    admin = users.authenticate("admin", admin_password)
    assert admin is not None
    session = users.create_session(admin)
    for token in ("", "nope", "x" * 10_000):
        assert users.get_session(token) is None
    users.delete_session(session.token)
    assert users.get_session(session.token) is None
    users.delete_session(session.token)  # twice is fine


def test_role_change_applies_to_existing_sessions(users: UserStore, admin_password: str) -> None:
    bob = users.create_user("bob", PASSWORD, "viewer", created_by="admin")
    session = users.create_session(bob)
    assert session.role == "viewer"
    updated = users.set_role("bob", "operator", by="admin")
    assert updated.role == "operator"
    seen = users.get_session(session.token)
    assert seen is not None and seen.role == "operator"
    users.delete_user("bob", by="admin")
    assert users.get_session(session.token) is None
    assert users.get_user("bob") is None


def test_last_admin_is_protected(users: UserStore, admin_password: str) -> None:
    with pytest.raises(UserError, match="last admin"):
        users.set_role("admin", "operator", by="admin")
    with pytest.raises(UserError, match="your own account"):
        users.delete_user("admin", by="admin")
    with pytest.raises(UserError, match="last admin"):
        users.delete_user("admin", by="bob")
    users.create_user("bob", PASSWORD, "admin", created_by="admin")
    users.set_role("admin", "viewer", by="bob")
    with pytest.raises(UserError, match="last admin"):
        users.set_role("bob", "operator", by="bob")
    with pytest.raises(UserError, match="last admin"):
        users.delete_user("bob", by="admin")
    users.set_role("admin", "admin", by="bob")
    users.delete_user("bob", by="admin")
    assert [(u.username, u.role) for u in users.list_users()] == [("admin", "admin")]


def test_unknown_users_are_user_errors(users: UserStore, admin_password: str) -> None:
    with pytest.raises(UserError, match="no user"):
        users.set_role("ghost", "viewer", by="admin")
    with pytest.raises(UserError, match="no user"):
        users.set_password("ghost", PASSWORD, by="admin")
    with pytest.raises(UserError, match="no user"):
        users.delete_user("ghost", by="admin")


def test_set_password(users: UserStore, admin_password: str) -> None:
    admin = users.authenticate("admin", admin_password)
    assert admin is not None and admin.must_change_password
    one, two = users.create_session(admin), users.create_session(admin)
    with pytest.raises(UserError, match="at least 10"):
        users.set_password("admin", "short", by="admin")
    users.set_password("admin", PASSWORD, by="admin", keep_token=one.token)
    assert users.get_session(one.token) is not None
    assert users.get_session(two.token) is None
    assert users.authenticate("admin", admin_password) is None
    changed = users.authenticate("admin", PASSWORD)
    assert changed is not None and not changed.must_change_password
    users.set_password("admin", PASSWORD + "!", by="admin")
    assert users.get_session(one.token) is None

    # reset by an admin: the user must choose a new one
    users.create_user("bob", PASSWORD, "viewer", created_by="admin")
    users.set_password("bob", "temporary password", by="admin")
    bob = users.authenticate("bob", "temporary password")
    assert bob is not None and bob.must_change_password


def test_csrf_check(users: UserStore, admin_password: str) -> None:
    admin = users.authenticate("admin", admin_password)
    assert admin is not None
    session = users.create_session(admin)
    other = users.create_session(admin)
    assert users.check_csrf(session, session.csrf_token)
    assert not users.check_csrf(session, other.csrf_token)
    assert not users.check_csrf(session, None)
    assert not users.check_csrf(session, "")
    assert not users.check_csrf(session, session.csrf_token + "x")
    assert not users.check_csrf(session, "é" * 10)
    seen = users.get_session(session.token)
    assert seen is not None and users.check_csrf(seen, session.csrf_token)


def test_only_a_digest_of_the_token_and_no_password_is_stored(
    db: Path, clock: FakeClock, tmp_path: Path
) -> None:
    with _open(db, clock) as users:
        users.ensure_admin(PASSWORD)
        admin = users.authenticate("admin", PASSWORD)
        assert admin is not None
        session = users.create_session(admin)
        # while open, the rows may sit in the write-ahead log: check every file of the database
        files = [p for p in tmp_path.iterdir() if p.name.startswith(db.name)]
        assert files
        for path in files:
            raw = path.read_bytes()
            assert session.token.encode() not in raw
            assert PASSWORD.encode() not in raw
    raw = db.read_bytes()
    assert session.token.encode() not in raw
    assert PASSWORD.encode() not in raw
    con = sqlite3.connect(db)
    try:
        digests = [row[0] for row in con.execute("SELECT token_sha256 FROM sessions")]
    finally:
        con.close()
    assert digests == [hashlib.sha256(session.token.encode()).hexdigest()]


def test_sessions_and_users_survive_reopening(db: Path, clock: FakeClock) -> None:
    with _open(db, clock) as users:
        users.ensure_admin(PASSWORD)
        admin = users.authenticate("admin", PASSWORD)
        assert admin is not None
        session = users.create_session(admin)
    with _open(db, clock) as users:
        assert users.ensure_admin() is None
        seen = users.get_session(session.token)
        assert seen is not None and seen.username == "admin"


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_session_carries_the_role(users: UserStore, admin_password: str, role: Role) -> None:
    user = users.create_user("bob", PASSWORD, role, created_by="admin")
    session = users.create_session(user)
    assert session.role == role
    seen = users.get_session(session.token)
    assert seen is not None and seen.role == role
