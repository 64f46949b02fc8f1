"""Broker credentials made at first start, never committed.

`init STORE` makes one random password per broker user (`STORE/<user>/password`) when it is
missing, the web UI's first admin password (`STORE/config_ui/admin_password`), and writes the
broker's password file (`STORE/broker/passwd`, mosquitto's PBKDF2-SHA512 format) and its ACL
(`STORE/broker/acl`) for the deployed system (`--system` or BMS_SYSTEM), rack layout
(`--racks`, `--modules-per-rack`, or BMS_RACKS and BMS_MODULES_PER_RACK) and the bridge's
Sparkplug edge node (`--edge-node` or BMS_SPARKPLUG_EDGE_NODE; unset: any); for a site's
strings (`--site-strings`) also `STORE/string_masters/`, their masters' passwords in one
directory (`STRING_MASTERS`). It runs again at
every start: existing secrets are kept, the password file and ACL are rewritten, so a rack or
user added later gets a secret without touching the others. Service secrets belong to the
services' user (`--uid`), the rest to root only.

`show NAME` prints a user's password (`ui_admin`: the UI admin's); `k8s` prints Kubernetes
Secrets with fresh passwords for `kubectl create -f -`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

from shared.deploy.acl import (
    DEFAULT_LAYOUT,
    DEFAULT_SYSTEM,
    SERVICE_LOGINS,
    SERVICE_ROLES,
    SITE_STRINGS_ENV,
    STRING_MASTER_PREFIX,
    RackLayout,
    add_edge_node_option,
    env_system,
    render,
    role_of,
    site_strings,
    users,
)
from shared.topics import SITE, UI

SERVICE_UID = 10001
"""The non-root user every service image runs as."""
PBKDF2_ITERATIONS = 101
"""mosquitto_passwd's default for the `$7$` (PBKDF2-SHA512) format."""
UI_ADMIN = "ui_admin"
UI_ADMIN_FILE = "admin_password"


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A mosquitto 2 password file hash: `$7$iterations$salt$pbkdf2-sha512`, base64."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def password_file(passwords: dict[str, str]) -> str:
    return "".join(f"{user}:{mosquitto_hash(pw)}\n" for user, pw in passwords.items())


def _write(path: Path, text: str, uid: int | None, mode: int) -> None:
    """Write through a temporary file, so a reader never sees half a secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    if uid is not None and os.geteuid() == 0:
        os.chown(tmp, uid, uid)
    tmp.replace(path)


def _ensure(path: Path, uid: int | None) -> tuple[str, bool]:
    if path.exists() and path.read_text().strip():
        if uid is not None and os.geteuid() == 0:
            os.chown(path, uid, uid)  # the volume may have been made by an older image
        return path.read_text().strip(), False
    secret = new_secret()
    _write(path, secret + "\n", uid, 0o400)
    return secret, True


def init(
    store: Path,
    uid: int | None = SERVICE_UID,
    layout: RackLayout = DEFAULT_LAYOUT,
    system: str = DEFAULT_SYSTEM,
    edge_node: str | None = None,
    site_strings: tuple[str, ...] = (),
) -> list[str]:
    """Make what is missing under `store`; returns the names of the new secrets. Service
    secrets go to `uid` when running as root (None: leave ownership alone). `site_strings`:
    `system` is a site of these strings (the site controller's grants)."""
    acl = render(
        layout, system, edge_node, site_strings
    )  # refuses a bad id before anything is written
    made: list[str] = []
    passwords: dict[str, str] = {}
    for user in users(layout, site_strings):
        owner = uid if role_of(user) in (*SERVICE_ROLES, SITE) or user in SERVICE_LOGINS else None
        passwords[user], new = _ensure(store / user / "password", owner)
        if new:
            made.append(user)
        if owner is not None and os.geteuid() == 0:
            os.chown(store / user, owner, owner)  # the service reads its directory's volume
    _hosted_masters(store, uid, passwords)
    _, new = _ensure(store / UI / UI_ADMIN_FILE, uid)
    if new:
        made.append(UI_ADMIN)
    _write(store / "broker" / "passwd", password_file(passwords), None, 0o600)
    _write(store / "broker" / "acl", acl, None, 0o600)
    return made


STRING_MASTERS = "string_masters"
"""`STORE/string_masters/master_core-<string>`: every string master's password in one
directory, a file named after its user, for one master process hosting every string of a
site (`BMS_SYSTEMS`, `BMS_MQTT_PASSWORD_DIR`; deploy/compose.masters.yaml)."""


def _hosted_masters(store: Path, uid: int | None, passwords: dict[str, str]) -> None:
    masters = {u: p for u, p in passwords.items() if u.startswith(STRING_MASTER_PREFIX)}
    if not masters:
        return
    for user, password in masters.items():
        _write(store / STRING_MASTERS / user, password + "\n", uid, 0o400)
    if uid is not None and os.geteuid() == 0:
        os.chown(store / STRING_MASTERS, uid, uid)


def show(store: Path, name: str) -> str:
    path = store / UI / UI_ADMIN_FILE if name == UI_ADMIN else store / name / "password"
    known = sorted(p.parent.name for p in store.glob("*/password"))
    if name != UI_ADMIN and name not in known:
        raise SystemExit(f"unknown name {name!r}; known: {', '.join([*known, UI_ADMIN])}")
    if not path.exists():
        raise SystemExit(f"{path} does not exist yet: start the stack once")
    return path.read_text().strip()


RACKS_SECRET = "bms-mqtt-racks"
"""One Secret for every rack: a key per rack user, the pod picks its own by its ordinal."""


def k8s_secrets(
    namespace: str,
    layout: RackLayout = DEFAULT_LAYOUT,
    system: str = DEFAULT_SYSTEM,
    edge_node: str | None = None,
) -> str:
    """Secrets for the Kubernetes manifests in deploy/k8s, as a JSON list (valid YAML)."""
    passwords = {user: new_secret() for user in users(layout)}

    def secret(name: str, data: dict[str, str]) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "stringData": data,
        }

    racks = {u: p for u, p in passwords.items() if u in layout.users()}
    items = [
        secret(f"bms-mqtt-{u.replace('_', '-')}", {"password": p})
        for u, p in passwords.items()
        if u not in racks
    ]
    items.append(secret(RACKS_SECRET, racks))
    broker = {"passwd": password_file(passwords), "acl": render(layout, system, edge_node)}
    items.append(secret("bms-broker-passwd", broker))
    items.append(secret("bms-ui-admin", {UI_ADMIN_FILE: new_secret()}))
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.deploy.credentials",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_init = sub.add_parser("init", help="make missing secrets and the broker password file")
    p_init.add_argument("store", type=Path, nargs="?", default=Path("/credentials"))
    p_init.add_argument("--uid", type=int, default=SERVICE_UID, help="owner of service secrets")
    for p in (p_init, p_k8s := sub.add_parser("k8s", help="print Kubernetes Secrets")):
        p.add_argument("--system", default=env_system(), help="the system id (BMS_SYSTEM)")
        p.add_argument("--racks", type=int, default=_env_int("BMS_RACKS", DEFAULT_LAYOUT.racks))
        p.add_argument(
            "--modules-per-rack",
            type=int,
            default=_env_int("BMS_MODULES_PER_RACK", DEFAULT_LAYOUT.modules_per_rack),
        )
        add_edge_node_option(p)
    p_init.add_argument(
        "--site-strings",
        default=os.environ.get(SITE_STRINGS_ENV) or None,
        help="comma-separated system ids of the site's strings (BMS_SITE_STRINGS)",
    )
    p_show = sub.add_parser("show", help="print a password")
    p_show.add_argument("name", help=f"a broker user or {UI_ADMIN}")
    p_show.add_argument("--store", type=Path, default=Path("/credentials"))
    p_k8s.add_argument("--namespace", default="bms")
    args = parser.parse_args(argv)
    if args.cmd == "show":
        print(show(args.store, args.name))
        return 0
    try:
        layout = RackLayout(args.racks, args.modules_per_rack)
        strings = site_strings(getattr(args, "site_strings", None))
        render(layout, args.system, args.edge_node, strings)
    except ValueError as exc:
        parser.error(str(exc))
    if args.cmd == "init":
        made = init(args.store, args.uid, layout, args.system, args.edge_node, strings)
        print(f"credentials in {args.store}: " + (f"made {', '.join(made)}" if made else "kept"))
    else:
        print(k8s_secrets(args.namespace, layout, args.system, args.edge_node))
    return 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default


if __name__ == "__main__":
    sys.exit(main())
