"""`python -m services.fleet_view --mqtt-url mqtts://fleet_view@centre:8883 ...`: the fleet list.

--password-file F     the broker password (kept out of the process list)
--site-url SITE=URL   a site's own web application, repeatable
--port 8090           the page (/), the API (/api/sites) and the health check (/healthz)

In a container every option has a default from the environment (deploy/compose.fleet.yaml):
BMS_MQTT_URL, BMS_MQTT_USERNAME, BMS_MQTT_PASSWORD_FILE, BMS_MQTT_CA_FILE,
BMS_FLEET_CLIENT_ID, BMS_FLEET_SITE_URLS (`SITE=URL` separated by commas or spaces),
BMS_FLEET_HOST, BMS_FLEET_PORT. An option given on the command line wins.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

import uvicorn

from services.fleet_view.app import create_app
from services.fleet_view.service import FleetViewService
from shared.endpoint import parse_mqtt_url, with_credentials


def site_urls(items: list[str]) -> dict[str, str]:
    """`SITE=URL` items; a clear error for one without `=`."""
    urls = {}
    for item in items:
        site, sep, url = item.partition("=")
        if not sep or not site or not url:
            raise SystemExit(f"a site URL is SITE=URL, not {item!r}")
        urls[site] = url
    return urls


def parse_args(argv: list[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    def opt(name: str) -> str | None:
        return env.get(f"BMS_{name}") or None  # set but empty (compose's `${X:-}`): unset

    parser = argparse.ArgumentParser(
        prog="python -m services.fleet_view",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    url = opt("MQTT_URL")
    parser.add_argument("--mqtt-url", required=url is None, default=url)
    parser.add_argument("--username", default=opt("MQTT_USERNAME"))
    parser.add_argument("--password-file", default=opt("MQTT_PASSWORD_FILE"))
    parser.add_argument("--ca-file", default=opt("MQTT_CA_FILE"))
    parser.add_argument("--client-id", default=opt("FLEET_CLIENT_ID") or "fleet-view")
    parser.add_argument("--site-url", action="append", default=[], metavar="SITE=URL")
    parser.add_argument("--host", default=opt("FLEET_HOST") or "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(opt("FLEET_PORT") or 8090))
    args = parser.parse_args(argv)
    if not args.site_url:
        args.site_url = (opt("FLEET_SITE_URLS") or "").replace(",", " ").split()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, os.environ)
    urls = site_urls(args.site_url)
    try:
        url = parse_mqtt_url(args.mqtt_url)
        endpoint = with_credentials(url, args.username, args.password_file)
    except ValueError as exc:  # unusable settings: say which, without a traceback
        raise SystemExit(f"fleet view: {exc}") from exc
    service = FleetViewService(
        endpoint, client_id=args.client_id, web_urls=urls, tls_ca_file=args.ca_file
    )
    service.start()
    try:
        app = create_app(service.sites, connected=lambda: service.bus.connected)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
