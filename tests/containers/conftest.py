"""The compose stack on a real Docker engine, once per session; skipped without an engine."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.containers.stack import ComposeStack, build_images, engine

TAG = "test"


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    client, why = engine()
    if client is None:
        pytest.skip(f"container tests skipped: {why}")
    return client


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> dict[str, float]:
    """Seconds taken to build each image (cached layers make rebuilds quick)."""
    return build_images(docker_client, TAG)


@pytest.fixture(scope="module")
def stack(docker_client: docker.DockerClient, images: dict[str, float]) -> Iterator[ComposeStack]:
    s = ComposeStack(docker_client, TAG)
    try:  # torn down even when start-up fails half-way
        s.up()
        s.healthy_after_s = s.wait_healthy()
        yield s
    finally:
        s.down()
