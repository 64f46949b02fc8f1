"""Drive the compose stack for the container tests and the container benchmark: build the
images with the docker SDK, run `docker-compose` under a unique project name, wait until
every container is healthy, and tear everything down (volumes included)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
from docker.errors import DockerException

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
IMAGES = (
    "slave_agent", "master_core", "modbus_gateway", "can_gateway", "config_ui", "integrations",
    "fleet_view",  # not in compose.yaml: deploy/compose.fleet.yaml (test_fleet_view.py)
)  # fmt: skip
ONE_SHOT = {"credentials"}
"""Services that run once and exit; every other one must become healthy."""


def engine() -> tuple[docker.DockerClient | None, str]:
    """A client of a reachable Docker engine, or None and why not."""
    if shutil.which("docker-compose") is None:
        return None, "docker-compose (Compose v1) is not installed"
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except DockerException as exc:
        return None, f"no Docker engine reachable ({exc})"
    return client, ""


def build_images(client: docker.DockerClient, tag: str) -> dict[str, float]:
    """Build every service image as bms/<service>:<tag>; seconds per image."""
    took: dict[str, float] = {}
    for name in IMAGES:
        t0 = time.monotonic()
        client.images.build(
            path=str(ROOT),
            dockerfile=f"deploy/docker/{name}.Dockerfile",
            tag=f"bms/{name}:{tag}",
            rm=True,
            forcerm=True,
        )
        took[name] = time.monotonic() - t0
    return took


class ComposeStack:
    def __init__(
        self,
        client: docker.DockerClient,
        tag: str,
        *,
        files: Sequence[Path] = (COMPOSE_FILE,),
        env: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.project = f"bmst{uuid.uuid4().hex[:8]}"
        self.network = f"{self.project}_default"
        self.files = list(files)
        # published on loopback at ports the engine picks, so parallel stacks never collide
        self.env = dict(
            os.environ,
            BMS_TAG=tag,
            BMS_HOST_BIND="127.0.0.1" if self.host == "127.0.0.1" else "0.0.0.0",
            BMS_HOST_MQTT_PORT="0",
            BMS_HOST_MQTTS_PORT="0",
            BMS_HOST_MODBUS_PORT="0",
            BMS_HOST_UI_PORT="0",
            BMS_HEALTH_INTERVAL="2s",  # time-to-healthy to within 2 s, not 10
            **(env or {}),
        )
        self.started_at = 0.0
        self.healthy_after_s: dict[str, float] = {}

    @property
    def host(self) -> str:
        """Where published ports are reachable: the engine's host."""
        url = urlsplit(str(self.client.api.base_url))
        return url.hostname if url.scheme in ("http", "https") and url.hostname else "127.0.0.1"

    def compose(self, *args: str, timeout_s: float = 300) -> str:
        argv = ["docker-compose", "-p", self.project]
        for f in self.files:
            argv += ["-f", str(f)]
        done = subprocess.run(
            [*argv, *args], env=self.env, capture_output=True, text=True, timeout=timeout_s
        )
        if done.returncode != 0:
            raise RuntimeError(f"docker-compose {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def up(self) -> None:
        self.started_at = time.monotonic()
        self.compose("up", "-d", "--no-build")

    def containers(self) -> dict[str, Any]:
        found = self.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.project}"}
        )
        return {
            c.labels["com.docker.compose.service"]: c
            for c in found
            if c.labels.get("com.docker.compose.oneoff") != "True"
        }

    def container(self, service: str) -> Any:
        return self.containers()[service]

    def wait_healthy(
        self, timeout_s: float = 240, services: Sequence[str] = ()
    ) -> dict[str, float]:
        """Seconds from `up` until each service was first seen healthy; raises on timeout or
        when a container dies."""
        healthy: dict[str, float] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pending = []
            for name, c in self.containers().items():
                if name in ONE_SHOT or (services and name not in services) or name in healthy:
                    continue
                c.reload()
                state = c.attrs["State"]
                if state.get("Health", {}).get("Status") == "healthy":
                    healthy[name] = time.monotonic() - self.started_at
                elif state["Status"] in ("exited", "dead") or c.attrs.get("RestartCount", 0):
                    raise RuntimeError(f"{name} died ({state['Status']}):\n{self.logs(name)}")
                else:
                    pending.append(name)
            if healthy and not pending:
                return healthy
            time.sleep(0.5)
        missing = sorted(set(self.containers()) - set(healthy) - ONE_SHOT)
        raise TimeoutError(
            f"not healthy within {timeout_s:.0f} s: {missing}\n{self.compose('ps')}\n{self.logs()}"
        )

    def port(self, service: str, port: int) -> int:
        return int(self.compose("port", service, str(port)).strip().rsplit(":", 1)[1])

    def password(self, name: str) -> str:
        """A secret made by the stack's credentials step, read the way docs/deployment.md says."""
        out = self.compose("run", "--rm", "credentials",
                           "python", "-m", "shared.deploy.credentials", "show", name)  # fmt: skip
        return out.strip().splitlines()[-1]

    def logs(self, service: str = "", tail: int = 40) -> str:
        try:
            return self.compose(
                "logs", "--no-color", f"--tail={tail}", *([service] if service else [])
            )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return f"(no logs: {exc})"

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "-t", "5")
