"""The Grafana dashboard queries only metrics the stack exports (names taken from a real scrape
of the integrations bridge), and every panel has a query."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from shared.messages import Event
from shared.topics import EVENTS, PACK_CELLS, PACK_STATE
from tests.factories import pack_state
from tests.integrations.test_bridge import Rig, snapshot

DASHBOARD = json.loads(
    (Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "bms.json").read_text()
)
PROMQL_WORDS = {"by", "without", "sum", "rate", "histogram_quantile", "label_values", "le",
                "on", "ignoring", "max", "min", "avg", "count", "irate", "increase"}  # fmt: skip


def exported() -> set[str]:
    rig = Rig()
    rig.master.publish(PACK_STATE, pack_state(energy_in_wh=1.0, energy_out_wh=1.0,
                                              equivalent_cycles=0.1, soh=99.0,
                                              temp_min_c=20.0, temp_max_c=25.0,
                                              temp_avg_c=22.0))  # fmt: skip
    rig.master.publish(PACK_CELLS, snapshot())
    rig.master.publish(EVENTS, Event(level="info", kind="info", code="x"))
    rig.pump()
    text = generate_latest(rig.bridge.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def metric_names(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that name metrics (not functions, labels or
    template variables)."""
    expr = re.sub(r"label_values\((\w+),\s*\w+\)", r"\1", expr)  # (metric, label)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"by \([^)]*\)", "", expr)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_WORDS}


def queries() -> list[tuple[str, str]]:
    out = [(p["title"], t["expr"]) for p in DASHBOARD["panels"] for t in p["targets"]]
    for var in DASHBOARD["templating"]["list"]:
        if var["type"] == "query":
            out.append((var["name"], var["definition"]))
    return out


def test_every_query_names_exported_metrics_only() -> None:
    names = exported()
    for title, expr in queries():
        used = metric_names(expr)
        assert used, (title, expr)
        assert used <= names, (title, sorted(used - names))


def test_the_checker_catches_a_misspelt_metric() -> None:
    assert metric_names('rate(bms_bus_recieved_total{x="1"}[1m])') == {"bms_bus_recieved_total"}
    assert "bms_bus_recieved_total" not in exported()


def test_panels_have_targets_and_unique_ids() -> None:
    panels: list[dict[str, Any]] = DASHBOARD["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["targets"] for p in panels)
