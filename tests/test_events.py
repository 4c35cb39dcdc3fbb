"""The event schema: JSON round trip, unknown and newer types skipped, upcasting."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pytest

from shared import events as ev
from shared.events import EVENT_TYPES, NewEvent, RecordedEvent, decode
from shared.pipeline.plan import Plan
from shared.projections.runs import fold
from shared.status import JobStatus, Role, StepStatus


def recorded(event_type: str, data: dict[str, object], seq: int = 1,
             version: int = 1) -> RecordedEvent:
    return RecordedEvent(id=f"id{seq}", stream="run-x", seq=seq, type=event_type,
                         version=version, ts="2026-01-01T00:00:00.000000+00:00", data=data,
                         meta={}, position=seq)


def sample(cls: type[ev.Event]) -> ev.Event:
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        values[f.name] = {"str": "x", "float": 1.5, "int | None": 3, "int": 2,
                          "Plan": Plan("f", ()), "JobStatus": JobStatus.CANCELLED,
                          "StepStatus": StepStatus.TIMEOUT, "Role": Role.DEVELOPER}.get(str(f.type), {"a": "b"})
    return cls(**values)


@pytest.mark.parametrize("cls", [EVENT_TYPES[name] for name in sorted(EVENT_TYPES)],
                         ids=sorted(EVENT_TYPES))
def test_every_event_type_round_trips_through_json(cls: type[ev.Event]) -> None:
    event = sample(cls)
    stored = json.loads(NewEvent(event).data_json())
    assert decode(recorded(cls.TYPE, stored)) == event


def test_event_payloads_are_deeply_immutable() -> None:
    data = {**sample(ev.RunRequested).to_data(), "params": {"K": "v"},
            "forge_event": {"commits": [{"id": "a"}]}}
    requested = decode(recorded("RunRequested", data))
    assert isinstance(requested, ev.RunRequested)
    payload: Any = requested.forge_event
    with pytest.raises(TypeError):
        payload["commits"][0]["id"] = "b"  # a dict nested in a list in a dict
    with pytest.raises(AttributeError):
        payload["commits"].append({"id": "c"})
    params: Any = requested.params
    with pytest.raises(TypeError):
        params["K"] = "w"
    made = ev.ProjectRegistered(name="p", repo="r", schedules=["@daily"],  # type: ignore[arg-type]
                                env={"A": "1"})
    with pytest.raises(AttributeError):
        made.schedules.append("@hourly")  # type: ignore[attr-defined]
    assert json.loads(NewEvent(requested).data_json())["forge_event"] == data["forge_event"]


def test_recorded_event_envelope_round_trips() -> None:
    r = recorded("JobQueued", {"job": "build"})
    assert RecordedEvent.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert r.to_json() == dataclasses.asdict(r)  # every field, a new one too


def test_unknown_event_type_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert decode(recorded("RunTeleported", {"to": "mars"})) is None
    assert "unknown event type" in caplog.text
    run = fold([recorded("RunRequested", sample(ev.RunRequested).to_data()),
                recorded("RunTeleported", {"to": "mars"}, seq=2)])
    assert run is not None and run.skipped_events == 1 and run.last_seq == 2


def test_statuses_decode_to_their_enum_and_an_unknown_one_is_skipped(
        caplog: pytest.LogCaptureFixture) -> None:
    data = {"job": "a", "status": "failure", "duration_s": 1.0}
    finished = decode(recorded("JobFinished", data))
    assert isinstance(finished, ev.JobFinished) and finished.status is JobStatus.FAILURE
    with caplog.at_level(logging.WARNING):
        assert decode(recorded("JobFinished", {**data, "status": "teleported"})) is None
    assert "does not know" in caplog.text


def test_a_newer_version_than_known_is_skipped() -> None:
    assert decode(recorded("JobQueued", {"job": "a"}, version=99)) is None


def test_old_versions_are_upcast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev.JobQueued, "VERSION", 2)
    monkeypatch.setitem(ev.UPCASTERS, ("JobQueued", 1),
                        lambda d: {"job": d["name"]})  # v1 called the field "name"
    assert decode(recorded("JobQueued", {"name": "build"}, version=1)) == ev.JobQueued("build")
