"""Provenance of the images a run pushed, derived from its events (pure).

``provenance(run_id, events)`` gives one in-toto Statement per ``ImagePushed`` event,
in the spirit of SLSA provenance v1 (https://slsa.dev/provenance/v1):

* ``subject``: the image's repository and digest (its tags as an annotation);
* ``buildDefinition.externalParameters``: the pipeline file and its SHA-256, the source,
  branch and commit, the trigger, the params, the job and step that pushed, and the
  build step's Dockerfile, context and target when the plan has them;
* ``resolvedDependencies``: the source repository at its commit, each included
  pipeline file with its SHA-256, and the image a promote step re-tagged. Base images
  (a Dockerfile's ``FROM``) are not recorded by Cyclone and are not listed;
* ``runDetails``: the builder (``urn:cyclone:worker:<worker id>`` of the worker that
  ran the job), the run id as ``invocationId``, when the run started and finished,
  and, as a byproduct, the run stream's audit head (``audit-head``: seq and hash as of
  the events given), to check against ``cyclone audit verify``.

The document is NOT signed: it says what Cyclone's event store says, and is as
trustworthy as that store (which ``cyclone audit verify`` checks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from shared import events as ev
from shared.events import RecordedEvent, decode
from shared.pipeline.plan import StepSpec

__all__ = ["BUILD_TYPE", "PREDICATE_TYPE", "STATEMENT_TYPE", "of_image", "provenance"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:cyclone:buildtype:pipeline:v1"

Json = dict[str, Any]


def provenance(run_id: str, events: Sequence[RecordedEvent]) -> list[Json]:
    """A Statement per image the run pushed, in the order they were pushed."""
    run = _RunFacts(run_id)
    for recorded in events:
        event = decode(recorded)
        if event is not None:
            run.apply(recorded, event)
    head = events[-1] if events and events[-1].hash else None  # unchained: no head
    return [run.statement(image, head) for image in run.images]


def of_image(statements: Sequence[Json], image: str) -> list[Json]:
    """The statements about ``image``: its name in ``${{ images.NAME }}`` or its
    repository. ``LookupError`` naming the images there are when none is."""
    chosen = [s for s in statements
              if image in (s["subject"][0]["name"], s["subject"][0]["annotations"]["name"])]
    if not chosen:
        pushed = sorted({s["subject"][0]["annotations"]["name"] for s in statements})
        raise LookupError(f"no image {image!r} was pushed by the run (it pushed: "
                          f"{', '.join(pushed) or 'none'})")
    return chosen


class _RunFacts:
    """What the run's events say about how its images were built."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.requested: ev.RunRequested | None = None
        self.resolved: ev.RunSourceResolved | None = None
        self.steps: dict[tuple[str, str], StepSpec] = {}
        self.workers: dict[str, str] = {}  # job -> the worker that ran it last
        self.started = self.finished = ""
        self.images: list[ev.ImagePushed] = []

    def apply(self, recorded: RecordedEvent, event: ev.Event) -> None:
        match event:
            case ev.RunRequested():
                self.requested, self.started = event, recorded.ts
            case ev.RunSourceResolved():
                self.resolved = event
            case ev.RunPlanned():
                self.steps = {(job.name, step.name): step for job in event.plan.jobs
                              for step in job.steps}
            case ev.JobStarted():
                self.workers[event.job] = event.worker
            case ev.ImagePushed():
                self.images.append(event)
            case _ if isinstance(event, ev.TERMINAL_RUN_EVENTS):
                self.finished = recorded.ts

    def statement(self, image: ev.ImagePushed, head: RecordedEvent | None) -> Json:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": image.repository, "digest": _digest(image.digest),
                         "annotations": {"tags": list(image.tags), "name": image.name}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": self._parameters(image),
                    "internalParameters": {"project": self._request("project")},
                    "resolvedDependencies": self._dependencies(image),
                },
                "runDetails": {
                    "builder": {"id": f"urn:cyclone:worker:{self.workers.get(image.job, '')}"},
                    "metadata": {"invocationId": self.run_id, "startedOn": self.started,
                                 "finishedOn": self.finished},
                    "byproducts": [] if head is None else [_audit_head(head)],
                },
            },
        }

    def _request(self, name: str) -> Any:
        return getattr(self.requested, name) if self.requested is not None else ""

    def _source(self, name: str) -> Any:
        """What the checkout resolved, else what was requested."""
        return getattr(self.resolved, name) if self.resolved is not None else self._request(name)

    def _parameters(self, image: ev.ImagePushed) -> Json:
        pipeline = str(self._source("pipeline"))
        params: Mapping[str, str] = self._request("params") or {}
        parameters: Json = {
            "pipeline": {"file": self._source("pipeline_file"),
                         "sha256": hashlib.sha256(pipeline.encode()).hexdigest()},
            "source": self._request("source"), "branch": self._source("branch"),
            "commit": self._source("commit"), "trigger": self._request("trigger"),
            "params": dict(params), "job": image.job, "step": image.step,
        }
        step = self.steps.get((image.job, image.step))
        if step is not None and step.build is not None:
            parameters["build"] = {"context": step.build.context_dir,
                                   "dockerfile": step.build.dockerfile,
                                   "target": step.build.target}
        return parameters

    def _dependencies(self, image: ev.ImagePushed) -> list[Json]:
        found: list[Json] = []
        commit = str(self._source("commit"))
        if self._request("source") and commit:
            found.append({"uri": f"git+{self._request('source')}@{commit}",
                          "digest": {"gitCommit": commit}})
        includes = self._source("includes") or ()
        for item in includes:
            if item.get("sha256"):
                found.append({"name": str(item.get("file", "")),
                              "uri": f"cyclone:{item.get('project', '')}/{item.get('file', '')}"
                                     f"@{item.get('commit') or item.get('ref', '')}",
                              "digest": {"sha256": str(item["sha256"])}})
        if image.promoted_from:
            found.append({"uri": f"docker://{image.promoted_from}",
                          "digest": _digest(image.digest)})
        return found


def _digest(digest: str) -> dict[str, str]:
    algorithm, _, value = digest.partition(":")
    return {algorithm: value} if value else {"sha256": digest}


def _audit_head(head: RecordedEvent) -> Json:
    return {"name": "audit-head", "digest": {"sha256": head.hash},
            "annotations": {"stream": head.stream, "seq": head.seq}}
