"""Configuration diffs: dotted paths, list handling, exact comparison and reapplication."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.config_ui.config_diff import (
    DiffEntry,
    apply_diff,
    config_diff,
    flatten,
    format_value,
    unflatten,
)
from shared.config import SystemConfig, demo_config


def _dump(config: SystemConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def test_flatten_uses_dotted_paths_and_keeps_scalar_lists_whole() -> None:
    flat = flatten(_dump(demo_config()))
    assert flat["protection.cell_overvoltage.fault.threshold"] == 4.25
    assert flat["topology.modules"] == 7
    assert flat["interfaces.can.profiles"] == ["pylon_hv"]
    assert "protection" not in flat


def test_tuples_are_compared_as_lists() -> None:
    assert flatten({"a": ("x", "y")}) == {"a": ["x", "y"]}
    assert config_diff({"a": ("x", "y")}, {"a": ["x", "y"]}) == []
    assert config_diff({"a": ("x",)}, {"a": ["x", "y"]}) == [
        DiffEntry("a", ["x"], ["x", "y"], "changed")
    ]


def test_lists_of_dicts_are_indexed() -> None:
    data = {"profiles": [{"name": "a", "id": 1}, {"name": "b", "id": 2}]}
    assert flatten(data) == {
        "profiles[0].name": "a",
        "profiles[0].id": 1,
        "profiles[1].name": "b",
        "profiles[1].id": 2,
    }
    changed = {"profiles": [{"name": "a", "id": 1}, {"name": "c", "id": 2}]}
    assert config_diff(data, changed) == [DiffEntry("profiles[1].name", "b", "c", "changed")]


def test_from_nothing_everything_is_added() -> None:
    dump = _dump(demo_config())
    entries = config_diff(None, dump)
    assert {e.change for e in entries} == {"added"}
    assert all(e.old is None for e in entries)
    assert {e.path for e in entries} == set(flatten(dump)) - {"config_version"}


def test_config_version_is_ignored() -> None:
    old = _dump(demo_config())
    new = {**old, "config_version": old["config_version"] + 5}
    assert config_diff(old, new) == []


def test_threshold_change_between_real_configs() -> None:
    old = _dump(demo_config())
    new = _dump(demo_config())
    new["protection"]["cell_overvoltage"]["fault"]["threshold"] = 4.24
    new["name"] = "renamed"
    assert config_diff(old, new) == [
        DiffEntry("name", old["name"], "renamed", "changed"),
        DiffEntry("protection.cell_overvoltage.fault.threshold", 4.25, 4.24, "changed"),
    ]


def test_added_and_removed_keys() -> None:
    old = {"a": 1, "b": {"c": 2}}
    new = {"a": 1, "b": {"d": 3}}
    assert config_diff(old, new) == [
        DiffEntry("b.c", 2, None, "removed"),
        DiffEntry("b.d", None, 3, "added"),
    ]


def test_floats_compare_exactly_and_bools_are_not_numbers() -> None:
    assert config_diff({"x": 4.25}, {"x": 4.25 + 1e-12})[0].change == "changed"
    assert config_diff({"x": True}, {"x": 1})[0].change == "changed"
    assert config_diff({"x": 1}, {"x": 1.0}) == []
    assert config_diff({"x": float("nan")}, {"x": float("nan")}) == []


def test_different_chemistries_give_a_sorted_diff_that_reapplies() -> None:
    old = _dump(SystemConfig.from_preset("LFP", modules=2, cells_per_module=8))
    new = _dump(demo_config())
    entries = config_diff(old, new)
    paths = [e.path for e in entries]
    assert paths == sorted(paths)
    assert "chemistry" in paths
    rebuilt = apply_diff(old, entries)
    assert rebuilt == {**new, "config_version": old["config_version"]}
    assert SystemConfig.model_validate(rebuilt) == demo_config()


def test_list_indices_sort_numerically() -> None:
    old = {"p": [{"v": i} for i in range(12)]}
    new = {"p": [{"v": i + 1} for i in range(12)]}
    paths = [e.path for e in config_diff(old, new)]
    assert paths[:3] == ["p[0].v", "p[1].v", "p[2].v"]
    assert paths[-1] == "p[11].v"


def test_format_value() -> None:
    assert format_value(None) == "null"
    assert format_value(True) == "true"
    assert format_value(4.25) == "4.25"
    assert format_value(["pylon_hv", 2]) == "[pylon_hv, 2]"


# JSON-shaped data; keys never contain "." or "[" (as in every configuration)
_keys = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
_values = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=3),
    max_leaves=20,
)
_documents = st.dictionaries(_keys, _values, max_size=5)


@given(_documents)
def test_flatten_round_trips(data: dict[str, Any]) -> None:
    assert unflatten(flatten(data)) == data


@given(_documents, _documents)
def test_applying_the_diff_reproduces_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    entries = config_diff(old, new)
    assert apply_diff(old, entries) == new
    paths = [e.path for e in entries]
    assert len(set(paths)) == len(paths)
    for entry in entries:
        assert (entry.old is None) if entry.change == "added" else True
        assert (entry.new is None) if entry.change == "removed" else True


@given(_documents)
def test_no_difference_from_itself(data: dict[str, Any]) -> None:
    assert config_diff(data, data) == []
    assert {e.change for e in config_diff(None, data)} <= {"added"}


@given(
    st.sampled_from(["cell_overvoltage", "cell_undervoltage", "pack_overvoltage"]),
    st.sampled_from(["warning", "alarm", "fault"]),
    st.floats(0.0, 1000.0, allow_nan=False),
)
def test_one_threshold_change_is_one_entry(name: str, level: str, value: float) -> None:
    old = _dump(demo_config())
    new = _dump(demo_config())
    before = new["protection"][name][level]["threshold"]
    new["protection"][name][level]["threshold"] = value
    entries = config_diff(old, new)
    if value == before:
        assert entries == []
    else:
        assert entries == [
            DiffEntry(f"protection.{name}.{level}.threshold", before, value, "changed")
        ]
