"""Container images and start-up: the size of each service image (and what it adds over its
base image), and the time from `docker-compose up` until each container is healthy, for a
cold start (fresh volumes: credentials made, configuration seeded) and a warm restart.
Needs a Docker engine and docker-compose; figures only: no pass/fail."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.containers.stack import IMAGES, ComposeStack, build_images, engine  # noqa: E402

TAG = "bench"
MB = 1e6


def image_sizes(client: object, tag: str) -> None:
    images = client.images  # type: ignore[attr-defined]
    base = images.get("python:3.11-slim").attrs["Size"]
    print(f"image sizes (base python:3.11-slim: {base / MB:.0f} MB)")
    for name in IMAGES:
        size = images.get(f"bms/{name}:{tag}").attrs["Size"]
        print(f"  bms/{name:<15} {size / MB:6.0f} MB   (+{(size - base) / MB:4.0f} MB over base)")
    broker = images.get("eclipse-mosquitto:2").attrs["Size"]
    print(f"  {'eclipse-mosquitto:2':<19} {broker / MB:6.0f} MB")


def start_up(stack: ComposeStack, label: str) -> None:
    t0 = time.monotonic()
    stack.up()
    healthy = stack.wait_healthy()
    print(f"start-up to healthy, {label}: {time.monotonic() - t0:.1f} s until all healthy")
    for name, seconds in sorted(healthy.items(), key=lambda kv: kv[1]):
        print(f"  {name:<16} {seconds:5.1f} s")


def main() -> None:
    client, why = engine()
    if client is None:
        print(f"skipped: {why}")
        return
    took = build_images(client, TAG)
    print(f"image build (cached layers reused): {sum(took.values()):.1f} s for {len(took)} images")
    image_sizes(client, TAG)
    stack = ComposeStack(client, TAG)
    try:
        start_up(stack, "cold: new volumes")
        stack.compose("stop", "-t", "10")
        start_up(stack, "warm: existing volumes")
    finally:
        stack.down()
    print("(health checks every 2 s here, 10 s by default: a time is the first passing check)")


if __name__ == "__main__":
    main()
