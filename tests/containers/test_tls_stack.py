"""The stack with the broker's TLS listener (compose.tls.yaml) and test certificates from
deploy/make-test-certs.sh: every service connects with mqtts:// and checks the broker's
certificate, and a third party reads over TLS."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shared.codec import decode
from shared.messages import PackState
from shared.topics import PACK_STATE
from tests.containers.conftest import TAG
from tests.containers.stack import COMPOSE_FILE, ComposeStack

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]
DEPLOY = COMPOSE_FILE.parent


@pytest.fixture(scope="module")
def tls_stack(
    docker_client: docker.DockerClient,
    images: dict[str, float],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ComposeStack, Path]]:
    certs = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(DEPLOY / "make-test-certs.sh"), str(certs)],
                   check=True, capture_output=True)  # fmt: skip
    s = ComposeStack(
        docker_client,
        TAG,
        files=(COMPOSE_FILE, DEPLOY / "compose.tls.yaml"),
        env={"BMS_TLS_DIR": str(certs)},
    )
    try:
        s.up()
        s.healthy_after_s = s.wait_healthy()
        yield s, certs
    finally:
        s.down()


def test_services_connect_over_tls(tls_stack: tuple[ComposeStack, Path]) -> None:
    stack, _ = tls_stack
    assert "master-core" in stack.healthy_after_s  # its health check logs in over TLS too
    for service in ("master-core", "slave-rack0", "config-ui"):
        assert "connected to broker:8883" in stack.logs(service, tail=200), service


def connect(stack: ComposeStack, ca: Path | None) -> tuple[mqtt.Client, list[bytes], bool]:
    got: list[bytes] = []
    up = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tp-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv5)  # fmt: skip
    client.username_pw_set("third_party", stack.password("third_party"))
    if ca is not None:
        client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    client.on_connect = lambda c, _u, _f, rc, _p: (
        rc.is_failure or (up.set(), c.subscribe(PACK_STATE.filter("demo"), qos=0))
    )
    client.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    try:
        client.connect(stack.host, stack.port("broker", 8883))
    except (OSError, ssl.SSLError):
        return client, got, False
    client.loop_start()
    return client, got, up.wait(5)


def test_third_party_reads_over_tls_and_plain_text_is_refused(
    tls_stack: tuple[ComposeStack, Path],
) -> None:
    stack, certs = tls_stack
    client, got, ok = connect(stack, certs / "ca.crt")
    try:
        assert ok
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.1)
        state = decode(PackState, PACK_STATE.topic("demo"), got[-1])
        assert state.voltage > 300
    finally:
        client.loop_stop()
        client.disconnect()
    plain, _, ok = connect(stack, None)  # MQTT without TLS on the TLS port
    plain.loop_stop()
    assert not ok
