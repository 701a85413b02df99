"""contracts.topics: names, namespaces, the audit sink's subscription pattern, topic specs."""

from __future__ import annotations

import re

import pytest

from contracts.limits import TOPIC_MAX_MESSAGE_BYTES
from contracts.topics import ALL_TOPICS_PATTERN, CATALOGUE, Topic, all_topics_pattern, spec_for, topic_name

NAMESPACES = ["", "t1.", "t1a2b.", "demo-1.", "a.", "0."]


@pytest.mark.parametrize("namespace", ["", "t1.", "a.", "0.", "demo-run-7.", "a" * 41 + "."])
def test_valid_namespaces(namespace: str) -> None:
    assert topic_name(Topic.AUDIT, namespace) == namespace + "atb.audit"
    assert all_topics_pattern(namespace)


@pytest.mark.parametrize(
    "namespace",
    [
        pytest.param("t1", id="no trailing dot"),
        pytest.param("T1.", id="upper case"),
        pytest.param("-t1.", id="leading dash"),
        pytest.param("a.b.", id="two segments"),
        pytest.param("t_1.", id="underscore"),
        pytest.param(".", id="dot only"),
        pytest.param("t1..", id="double dot"),
        pytest.param("t1.\n", id="newline"),
        pytest.param("a" * 42 + ".", id="too long"),
        pytest.param("tü.", id="non-ascii"),
        pytest.param(" t1.", id="space"),
    ],
)
def test_invalid_namespaces_rejected(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        topic_name(Topic.AUDIT, namespace)
    with pytest.raises(ValueError, match="namespace"):
        all_topics_pattern(namespace)


@pytest.mark.parametrize(
    ("topic", "namespace", "expected"),
    [
        (Topic.POA_REQUESTS, "", "atb.poa.requests"),
        (Topic.POA_REQUESTS, "t1a2b.", "t1a2b.atb.poa.requests"),
        (Topic.KEYS, "demo.", "demo.atb.keys"),
        (Topic.DLQ, "", "atb.dlq"),
    ],
)
def test_topic_name(topic: Topic, namespace: str, expected: str) -> None:
    assert topic_name(topic, namespace) == expected


def test_default_pattern_constant() -> None:
    assert all_topics_pattern() == ALL_TOPICS_PATTERN


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_pattern_matches_every_catalogue_topic_of_its_namespace(namespace: str) -> None:
    pattern = re.compile(all_topics_pattern(namespace))
    for spec in CATALOGUE:
        assert pattern.match(topic_name(spec.topic, namespace)), (namespace, spec.topic)


@pytest.mark.parametrize("mine", NAMESPACES)
@pytest.mark.parametrize("other", NAMESPACES)
def test_pattern_matches_no_topic_of_another_namespace(mine: str, other: str) -> None:
    if mine == other:
        return
    pattern = re.compile(all_topics_pattern(mine))
    for spec in CATALOGUE:
        assert not pattern.match(topic_name(spec.topic, other)), (mine, other, spec.topic)


def test_default_pattern_does_not_match_the_atb_namespace() -> None:
    pattern = re.compile(all_topics_pattern(""))
    for spec in CATALOGUE:
        assert not pattern.match(topic_name(spec.topic, "atb.")), spec.topic


@pytest.mark.parametrize("name", ["other.topic", "xatb.audit", "__consumer_offsets", "atbaudit", "t1atb.audit"])
def test_default_pattern_ignores_non_atb_topics(name: str) -> None:
    assert not re.match(ALL_TOPICS_PATTERN, name)


def test_catalogue_covers_every_topic_once() -> None:
    assert sorted(spec.topic for spec in CATALOGUE) == sorted(Topic)


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.topic.value)
def test_every_topic_has_partitions_and_a_retention(spec: object) -> None:
    from contracts.topics import TopicSpec

    assert isinstance(spec, TopicSpec)
    assert spec.partitions >= 1
    assert spec_for(spec.topic) is spec
    configs = spec.configs()
    if spec.compacted:
        assert configs["cleanup.policy"] == "compact"
        assert "retention.ms" not in configs
    else:
        assert configs == {
            "cleanup.policy": "delete",
            "retention.ms": str(spec.retention_ms),
            "max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES),
        }
        assert spec.retention_ms > 0


def test_keys_and_changelog_topics_are_compacted_and_others_are_not() -> None:
    for topic in (Topic.KEYS, Topic.APPROVALS_STATE):
        assert spec_for(topic).compacted
        assert spec_for(topic).configs()["cleanup.policy"] == "compact"
    assert {s.topic for s in CATALOGUE if s.compacted} == {Topic.KEYS, Topic.APPROVALS_STATE}


def test_request_topics_share_a_partition_count() -> None:
    # A request's whole history lives on one partition number everywhere (docs/architecture.md §4.4).
    counts = {s.partitions for s in CATALOGUE if s.topic is not Topic.KEYS}
    assert len(counts) == 1


def test_spec_for_unknown_raises() -> None:
    with pytest.raises(KeyError):
        spec_for("atb.nope")  # type: ignore[arg-type]
