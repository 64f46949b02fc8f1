"""The four-rack layout (compose.racks.yaml) on a real Docker engine: the credentials step
makes a broker user for every rack and an ACL naming each rack's modules, all four racks
come up healthy, and the master sees every module of the demo system."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from shared.topics import RACK_TELEMETRY, SERVICE_STATUS, SLAVE_TELEMETRY
from tests.containers.conftest import TAG
from tests.containers.stack import COMPOSE_FILE, ComposeStack
from tests.containers.test_stack import NOT_AUTHORIZED, SYSTEM, ThirdParty, closed
from tests.system.agents import wait_until

pytestmark = pytest.mark.timeout(600)
RACKS = 4


@pytest.fixture(scope="module")
def racks_stack(
    docker_client: docker.DockerClient, images: dict[str, float]
) -> Iterator[ComposeStack]:
    s = ComposeStack(
        docker_client, TAG, files=(COMPOSE_FILE, COMPOSE_FILE.parent / "compose.racks.yaml")
    )
    try:
        s.up()
        s.healthy_after_s = s.wait_healthy()
        yield s
    finally:
        s.down()


def test_four_racks_each_log_in_as_their_own_user(racks_stack: ComposeStack) -> None:
    assert {f"slave-rack{r}" for r in range(RACKS)} <= set(racks_stack.healthy_after_s)
    watcher = ThirdParty(racks_stack)
    try:

        def all_online() -> bool:
            statuses = [watcher.get(SERVICE_STATUS, service=f"slave_agent-rack{r}")
                        for r in range(RACKS)]  # fmt: skip
            return all(s is not None and s.state == "online" for s in statuses)

        assert wait_until(all_online, 30)
        # the master hears all seven modules and closes the contactors
        assert wait_until(lambda: closed(watcher), 90), watcher.state()
        state = watcher.state()
        assert state is not None and not state.stale_modules and not state.faults, state
    finally:
        watcher.close()
    # rack 3 (module 6 only, at two per rack) may not speak for rack 2's module 5
    rack3 = ThirdParty(racks_stack, user="slave_agent-rack3")
    try:
        assert rack3.publish(SLAVE_TELEMETRY.topic(SYSTEM, module=5), b"\x80") == NOT_AUTHORIZED
        assert rack3.publish(RACK_TELEMETRY.topic(SYSTEM, modules="4-5"), b"\x80") == NOT_AUTHORIZED
    finally:
        rack3.close()
