"""mqtts:// with a CA file: the bus connects over TLS and refuses a broker it cannot verify."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from shared.broker import MosquittoBroker, free_port, wait_for_port
from shared.bus import MqttBus
from shared.settings import parse_mqtt_url
from tests.system.agents import assert_event_crosses

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def make_ca(dir: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=dir, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} CA",
        "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", f"{name}-server.key", "-out", f"{name}-server.csr")  # fmt: skip
    (dir / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", f"{name}-server.csr", "-CA", f"{name}-ca.crt", "-CAkey",
        f"{name}-ca.key", "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
        "-out", f"{name}-server.crt")  # fmt: skip
    return dir / f"{name}-ca.crt", dir / f"{name}-server.crt", dir / f"{name}-server.key"


def test_mqtts_url_with_a_ca_file(tmp_path: Path, system_id: str) -> None:
    ca, cert, key = make_ca(tmp_path, "site")
    other_ca, _, _ = make_ca(tmp_path, "other")
    tls_port = free_port()
    extra = f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    with MosquittoBroker(extra_config=extra) as broker:
        wait_for_port("127.0.0.1", tls_port, 5)
        url = f"mqtts://127.0.0.1:{tls_port}"
        assert parse_mqtt_url(url).tls
        good = MqttBus(parse_mqtt_url(url), system=system_id, service="tls", kind="test",
                       tls_ca_file=str(ca))  # fmt: skip
        plain = MqttBus(parse_mqtt_url(broker.url), system=system_id, service="plain", kind="test")
        bad = MqttBus(parse_mqtt_url(url), system=system_id, service="untrusted", kind="test",
                      tls_ca_file=str(other_ca))  # fmt: skip
        try:
            assert good.start(wait_s=10)
            assert plain.start(wait_s=10)
            assert_event_crosses(good, plain, "over_tls")
            assert not bad.start(wait_s=3)  # certificate not signed by the CA it trusts
        finally:
            for bus in (good, plain, bad):
                bus.stop(timeout_s=0.5)
