"""deploy/make-test-certs.sh makes certificates a real mosquitto serves and the bus trusts,
including a client certificate for brokers that require one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from shared.broker import MosquittoBroker, find_mosquitto, free_port, wait_for_port
from shared.bus import MqttBus
from shared.settings import ServiceSettings
from tests.system.agents import assert_event_crosses

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or find_mosquitto() is None,
    reason="needs openssl and mosquitto",
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "make-test-certs.sh"), str(out), "bms-central"],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def test_the_script_makes_a_ca_and_server_and_client_certificates(certs: Path) -> None:
    assert {p.name for p in certs.iterdir()} == {
        "ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"
    }  # fmt: skip
    names = subprocess.run(
        ["openssl", "x509", "-in", str(certs / "server.crt"), "-noout", "-ext", "subjectAltName"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    for name in ("DNS:broker", "DNS:localhost", "IP Address:127.0.0.1", "DNS:bms-central"):
        assert name in names
    assert (certs / "server.key").stat().st_mode & 0o077 == 0


def bus(url: str, system: str, certs: Path, *, client_cert: bool) -> MqttBus:
    settings = ServiceSettings(
        mqtt_url=url,
        system=system,
        mqtt_ca_file=str(certs / "ca.crt"),
        mqtt_cert_file=str(certs / "client.crt") if client_cert else None,
        mqtt_key_file=str(certs / "client.key") if client_cert else None,
    )
    return MqttBus.from_settings(settings, kind="test")


def test_mosquitto_serves_them_and_requires_the_client_certificate(
    certs: Path, system_id: str
) -> None:
    port = free_port()
    extra = (
        f"listener {port} 127.0.0.1\ncafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\n"
        f"keyfile {certs / 'server.key'}\nrequire_certificate true\n"
    )
    with MosquittoBroker(extra_config=extra) as broker:
        wait_for_port("127.0.0.1", port, 5)
        # "localhost" is one of the names in the server certificate: the host name is checked
        url = f"mqtts://localhost:{port}"
        good = bus(url, system_id, certs, client_cert=True)
        anonymous = bus(url, system_id, certs, client_cert=False)
        plain = MqttBus.from_settings(ServiceSettings(mqtt_url=broker.url, system=system_id),
                                      kind="test")  # fmt: skip
        try:
            assert plain.start(wait_s=10)
            assert good.start(wait_s=10), broker.log_tail()
            assert_event_crosses(good, plain, "over_tls")
            assert not anonymous.start(wait_s=3)  # no client certificate: refused
        finally:
            for b in (good, anonymous, plain):
                b.stop(timeout_s=0.5)
