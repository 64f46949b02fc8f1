"""The fleet's central tier: throughput through a three-node RabbitMQ cluster to the fleet view,
by sites x strings, and a site bridge's catch-up after an outage.

    python bench/bench_fleet.py [--sites 1,3,6] [--strings 2,8] [--rounds 200]
                                [--outage-s 60] [--rate-hz 20]

In a network namespace of its own (`unshare --net`): the cluster (shared/rabbitmq.py), one
mosquitto per site bridged to it with the generated configuration, a publisher per site and the
fleet view on node 1 (services/fleet_view/rig.py), everything on this machine's cores.

Throughput: each round publishes one QoS 1 event per string of every site and one summary per
site, as fast as the publishers go; the figure is messages counted by the view over the time
from the first publish until the view has them all (the publishers, three Erlang VMs, the site
brokers and the view share the CPU: a lower bound for the cluster). Catch-up: one site's link
is cut (blackholed) for `--outage-s` while it publishes `--rate-hz` events a second; the time
from the link's return until the view has every queued message. Figures only: no pass/fail.
Prints "skipped" without rabbitmq-server, mosquitto or a network namespace.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fault_matrix import EXIT_SKIP, enter_netns  # noqa: E402

from services.fleet_view.rig import FleetRig, SiteSim, wait_for  # noqa: E402
from shared.broker import find_mosquitto  # noqa: E402
from shared.rabbitmq import find_rabbitmq  # noqa: E402

NETNS_ENV = "BMS_FLEET_BENCH_NETNS"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def view_total(rig: FleetRig) -> int:
    assert rig.view is not None
    return sum(v.events + v.summaries for v in rig.view.sites())


def throughput(rig: FleetRig, sites: int, strings: int, rounds: int) -> tuple[int, float]:
    """(messages, seconds) from the first publish until the view counted them all."""
    chosen: list[SiteSim] = rig.sites[:sites]
    before = view_total(rig)
    expected = rounds * sites * (strings + 1)
    t0 = time.monotonic()
    for _ in range(rounds):
        for sim in chosen:
            sim.publish_events(strings)
            sim.publish_summary()
    if not wait_for(lambda: view_total(rig) - before >= expected, 300, poll_s=0.05):
        raise RuntimeError(f"the view counted {view_total(rig) - before} of {expected}")
    return expected, time.monotonic() - t0


def catch_up(rig: FleetRig, outage_s: float, rate_hz: float) -> tuple[int, float, float]:
    """(messages queued during the cut, seconds from the link's return until the first and
    until the last of them arrived)."""
    sim = rig.sites[0]
    before = view_total(rig)
    sim.cut()
    t_end = time.monotonic() + outage_s
    published = 0
    next_s = time.monotonic()
    while time.monotonic() < t_end:
        sim.publish_events(1)
        published += 1
        if published % 10 == 0:
            sim.publish_summary()
            published += 1
        next_s += 1.0 / rate_hz
        time.sleep(max(0.0, next_s - time.monotonic()))
    seen_in_cut = view_total(rig) - before
    sim.restore()
    t0 = time.monotonic()
    if not wait_for(lambda: view_total(rig) - before > seen_in_cut, 300, poll_s=0.05):
        raise RuntimeError("nothing arrived after the link returned")
    first_s = time.monotonic() - t0
    if not wait_for(lambda: view_total(rig) - before >= published, 300, poll_s=0.05):
        raise RuntimeError(f"the view counted {view_total(rig) - before} of {published}")
    return published, first_s, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=_ints, default=[1, 3, 6])
    parser.add_argument("--strings", type=_ints, default=[2, 8])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--rate-hz", type=float, default=20.0)
    args = parser.parse_args(argv)
    if find_rabbitmq() is None or find_mosquitto() is None:
        print("bench_fleet skipped: needs rabbitmq-server and mosquitto")
        return 0
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with tempfile.TemporaryDirectory(prefix="bms-fleet-bench-") as tmp:
        t0 = time.monotonic()
        rig = FleetRig(sites=max(args.sites), strings=max(args.strings), workdir=Path(tmp))
        with rig:
            print(f"cluster of 3 nodes and {len(rig.sites)} sites up in "
                  f"{time.monotonic() - t0:.0f} s")  # fmt: skip
            print("throughput, QoS 1, site publisher -> site mosquitto -> bridge -> cluster "
                  "-> fleet view:")  # fmt: skip
            print(f"  {'sites':>5} {'strings':>7} {'messages':>8} {'seconds':>7} {'msg/s':>7}")
            for sites in args.sites:
                for strings in args.strings:
                    n, took_s = throughput(rig, sites, strings, args.rounds)
                    print(f"  {sites:5d} {strings:7d} {n:8d} {took_s:7.1f} {n / took_s:7.0f}")
            n, first_s, took_s = catch_up(rig, args.outage_s, args.rate_hz)
            print(f"catch-up: {n} messages queued at one site during a {args.outage_s:.0f} s "
                  f"cut; after the link returned the first arrived in {first_s:.1f} s (the "
                  f"bridge's reconnect: keepalive 5 s, retry 1-3 s), the last in {took_s:.1f} s "
                  f"({n / max(took_s - first_s, 1e-3):.0f} msg/s draining)")  # fmt: skip
    return 0


if __name__ == "__main__":
    inner = enter_netns(sys.argv[1:], Path(__file__).resolve(), NETNS_ENV)
    if inner is None:
        raise SystemExit(main())
    if inner == EXIT_SKIP:
        print("bench_fleet skipped: no network namespace")
        raise SystemExit(0)
    raise SystemExit(inner)
