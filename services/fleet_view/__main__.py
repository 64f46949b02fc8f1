"""`python -m services.fleet_view --mqtt-url mqtts://fleet_view@centre:8883 ...`: the fleet list.

--password-file F     the broker password (kept out of the process list)
--site-url SITE=URL   a site's own web application, repeatable
--port 8090           the page (/) and the API (/api/sites)
"""

from __future__ import annotations

import argparse

import uvicorn

from services.fleet_view.app import create_app
from services.fleet_view.service import FleetViewService
from shared.endpoint import parse_mqtt_url, with_credentials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.fleet_view", description=__doc__)
    parser.add_argument("--mqtt-url", required=True)
    parser.add_argument("--username")
    parser.add_argument("--password-file")
    parser.add_argument("--ca-file")
    parser.add_argument("--client-id", default="fleet-view")
    parser.add_argument("--site-url", action="append", default=[], metavar="SITE=URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    urls = dict(item.split("=", 1) for item in args.site_url)
    endpoint = with_credentials(parse_mqtt_url(args.mqtt_url), args.username, args.password_file)
    service = FleetViewService(
        endpoint, client_id=args.client_id, web_urls=urls, tls_ca_file=args.ca_file
    )
    service.start()
    try:
        uvicorn.run(create_app(service.sites), host=args.host, port=args.port, log_level="warning")
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
