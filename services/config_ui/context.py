"""Everything a request handler needs, and the one way a configuration gets applied."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from services.config_ui import wizard
from services.config_ui.bridge import BusBridge
from services.config_ui.cell_history import CellHistoryStore
from services.config_ui.config_store import (
    ConfigSource,
    ConfigStore,
    ConfigVersion,
    SiteConfigStore,
    SiteConfigVersion,
    StoredConfigError,
)
from services.config_ui.history_store import GAP_BUCKETS, PERSIST_PERIOD_S, HistoryStore
from services.config_ui.live import HistoryPoint, LiveView, with_gaps
from services.config_ui.settings import ConfigUiSettings
from services.config_ui.site_config import SiteAcks, validate_site
from services.config_ui.site_live import SiteLive
from services.config_ui.users import LoginThrottled, User, UserStore
from shared.config import SiteConfig, SystemConfig

log = logging.getLogger("config_ui")


class InvalidConfigError(ValueError):
    """A configuration that does not validate; `errors` maps field paths to messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{p or 'config'}: {m}" for p, ms in errors.items() for m in ms))
        self.errors = errors


@dataclass(frozen=True)
class PendingImport:
    """A file an admin imported: valid, shown with its diff, not applied yet."""

    config: SystemConfig
    filename: str
    file_system: str | None
    """The `system_id` the file was made for (None: it names none)."""
    token: str
    """Ties "Apply" to the review the admin saw (a second import replaces it)."""


def file_system_id(data: Any) -> str | None:
    """The system id an imported configuration names, if any (before it is replaced by ours)."""
    value = data.get("system_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


@dataclass
class UiContext:
    settings: ConfigUiSettings
    store: ConfigStore
    users: UserStore
    live: LiveView
    bridge: BusBridge
    history: HistoryStore | None = None
    """The stored history beyond what the live view keeps in memory."""
    cell_history: CellHistoryStore | None = None
    """Each cell's minutes (voltage, temperatures, balancing time)."""
    site: SiteLive | None = None
    """The site this system is a string of (BMS_SITE), if any."""
    site_store: SiteConfigStore | None = None
    """The site configuration's versions, in the web application that keeps them
    (BMS_UI_SITE_CONFIG with BMS_SITE); None elsewhere."""
    site_acks: SiteAcks | None = None
    """The site controller's acknowledgements of the site configuration."""
    drafts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Wizard drafts by user name (kept in memory: a draft is work in progress)."""
    edited: dict[str, frozenset[str]] = field(default_factory=dict)
    """By user: the draft's fields the user set, which a new size or chemistry keeps."""
    rederivations: dict[str, tuple[str, tuple[wizard.Rederivation, ...]]] = field(
        default_factory=dict
    )
    """By user: the step whose last submission moved derived fields, and those fields."""
    pending_imports: dict[str, PendingImport] = field(default_factory=dict)
    """By user: an imported file checked and shown with its diff, waiting for "Apply"."""
    _apply_lock: threading.Lock = field(default_factory=threading.Lock)
    _count_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def system(self) -> str:
        return self.settings.system

    def count(self, name: str) -> None:
        """A health counter, published with the service status and shown on /healthz."""
        with self._count_lock:
            self.bridge.bus.counters[name] += 1

    def counters(self) -> dict[str, int]:
        with self._count_lock:
            return dict(sorted(self.bridge.bus.counters.items()))

    def login(self, username: str, password: str, *, client: str) -> User | None:
        """The user when the password matches; every attempt is logged and counted (an audit
        trail of who got in and of guessing). LoginThrottled while the name is locked."""
        try:
            user = self.users.authenticate(username, password, client=client)
        except LoginThrottled as exc:
            self.count("login_throttled")
            log.warning("login for %r from %s throttled (%.0f s)", username, client,
                        exc.retry_after_s)  # fmt: skip
            raise
        if user is None:
            self.count("login_failed")
            log.warning("failed login for %r from %s", username, client)
        else:
            self.count("logins")
            log.info("%s (%s) logged in from %s", user.username, user.role, client)
        return user

    def validate(self, data: Any) -> SystemConfig:
        if not isinstance(data, dict):
            raise InvalidConfigError({"": ["the configuration must be a JSON object"]})
        data = {**data, "system_id": self.system}
        config, errors = wizard.validate(data)
        if config is None:
            raise InvalidConfigError(errors or {"": ["invalid configuration"]})
        return config

    def apply(
        self, config: SystemConfig, *, user: str, source: ConfigSource, comment: str = ""
    ) -> ConfigVersion:
        """Store a new version and publish it (retained); services acknowledge what they run."""
        with self._apply_lock:
            version = self.store.save(config, user=user, source=source, comment=comment)
            self.bridge.publish_config(version.config)
        log.info("configuration %d applied by %s (%s)", version.version, user, source)
        return version

    # --- the site configuration (`site_store`) ---------------------------------------------
    def validate_site(self, data: Any) -> SiteConfig:
        """InvalidConfigError with the problems by field (a site other than BMS_SITE too)."""
        assert self.settings.site is not None
        config, errors = validate_site(data, self.settings.site)
        if config is None:
            raise InvalidConfigError(errors or {"": ["invalid site configuration"]})
        return config

    def apply_site(
        self, config: SiteConfig, *, user: str, source: ConfigSource, comment: str = ""
    ) -> SiteConfigVersion:
        """Store a new site configuration version and publish it (retained) under the site id;
        the site controller acknowledges it."""
        assert self.site_store is not None
        with self._apply_lock:
            version = self.site_store.save(config, user=user, source=source, comment=comment)
            self.bridge.publish_site_config(version.config)
        log.info("site configuration %d applied by %s (%s)", version.version, user, source)
        return version

    def rollback_site(self, version: int, *, user: str, comment: str = "") -> SiteConfigVersion:
        assert self.site_store is not None
        with self._apply_lock:
            new = self.site_store.rollback(version, user=user, comment=comment)
            self.bridge.publish_site_config(new.config)
        log.info("site configuration %d (rollback to %d) applied by %s", new.version, version,
                 user)  # fmt: skip
        return new

    def latest_site(self) -> SiteConfigVersion | None:
        if self.site_store is None:
            return None
        try:
            return self.site_store.latest()
        except StoredConfigError as exc:
            log.error("stored site configuration %d cannot be used: %s", exc.version, exc)
            return None

    def history_points(self, seconds: float, max_points: int = 1500) -> list[HistoryPoint]:
        """The last hour at 1 s from memory; longer spans from the store, averaged. After a
        restart, the stored points fill what memory does not reach back to yet."""
        now = self.live.clock()
        recent = self.live.history(seconds)
        if self.history is None:
            return recent
        if seconds <= self.live.history_span_s():
            since = now - seconds
            if recent and recent[0].ts - since <= 2 * PERSIST_PERIOD_S:
                return recent
            until = recent[0].ts - 1e-3 if recent else now
            stored = self.history.query(since, until, max_points)
            return with_gaps([*stored, *recent], GAP_BUCKETS * PERSIST_PERIOD_S)
        return self.history.query(now - seconds, now, max_points)

    def latest(self) -> ConfigVersion | None:
        """The newest stored version; None (and an error in the log) when it no longer loads."""
        try:
            return self.store.latest()
        except StoredConfigError as exc:
            log.error("stored configuration %d cannot be used: %s", exc.version, exc)
            return None

    def rollback(self, version: int, *, user: str, comment: str = "") -> ConfigVersion:
        """A new version with the content of `version`, published at once."""
        with self._apply_lock:
            new = self.store.rollback(version, user=user, comment=comment)
            self.bridge.publish_config(new.config)
        log.info("configuration %d (rollback to %d) applied by %s", new.version, version, user)
        return new

    def publish_latest(self) -> ConfigVersion | None:
        latest = self.latest()
        if latest is not None:
            self.bridge.publish_config(latest.config)
        return latest

    def submit_step(self, user: str, key: str, form: dict[str, str]) -> wizard.FormResult:
        """Apply a wizard step's form to the user's draft, keeping the edit record and the
        list of derived fields it moved (until the next submission)."""
        edited = self.edited.get(user, frozenset())
        result = wizard.apply_form(key, self.draft_for(user), form, edited=edited)
        self.drafts[user] = result.draft
        self.edited[user] = edited | result.edited
        if result.changes:
            self.rederivations[user] = (key, result.changes)
        else:
            self.rederivations.pop(user, None)
        return result

    def choose_derived(self, user: str, path: str, *, keep_old: bool) -> None:
        """Keep the old value of a field the last submission derived again, or take the
        derived one. KeyError if that submission did not move `path`."""
        key, changes = self.rederivations.get(user, ("", ()))
        chosen = wizard.choose(
            self.draft_for(user), self.edited.get(user, frozenset()), changes, path,
            keep_old=keep_old,
        )  # fmt: skip
        self.drafts[user] = chosen.draft
        self.edited[user] = chosen.edited
        self.rederivations[user] = (key, chosen.changes)

    def drop_draft(self, user: str) -> None:
        """Forget the user's draft, its edit record and its list of derived fields."""
        self.drafts.pop(user, None)
        self.edited.pop(user, None)
        self.rederivations.pop(user, None)

    def draft_for(self, user: str) -> dict[str, Any]:
        draft = self.drafts.get(user)
        if draft is None:
            latest = self.latest()
            draft = (
                wizard.draft_from_config(latest.config)
                if latest is not None
                else wizard.new_draft(self.system)
            )
            self.drafts[user] = draft
        return draft
