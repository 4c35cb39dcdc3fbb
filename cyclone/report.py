"""``cyclone report``'s summaries: a run, one job of it, or one step, as pure functions of
the run's view as the API shows it (``RunView.to_json``; the same for a local run,
folded from this machine's store).

``summary(run, job, step)`` picks the part and sums it up (status, times, durations,
attempts, exit codes); ``lines`` prints a summary. A job or a step the run does not have
is ``NoSuchPart``, naming what it has. A step is found in ``job``, or by its name alone
when one job of the run has a step of that name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from cyclone.output import duration, field_lines, first_line, table_lines, when
from shared.errors import CycloneError

__all__ = ["NoSuchPart", "lines", "summary"]

Json = dict[str, Any]
_FAILED = ("failure", "errored", "cancelled", "timeout")


class NoSuchPart(CycloneError):
    """The run has no such job, or the job no such step; the message lists what it has."""


def summary(run: Json, job: str | None = None, step: str | None = None) -> Json:
    """The run's summary (``job`` and ``step`` None), a job's, or a step's."""
    if step is not None:
        found, at = _step(run, job, step)
        return {"run": run["id"], "job": found["name"], "step": _step_summary(at)}
    if job is not None:
        found = _job(run, job)
        return {"run": run["id"], "job": _job_summary(found)}
    return {"run": run["id"], **_run_summary(run)}


def lines(shown: Json) -> list[str]:
    """A summary as text."""
    if "step" in shown:
        step = shown["step"]
        return [f"run {shown['run']}, job {shown['job']}, step {step['name']}",
                *field_lines(_step_fields(step))]
    if "job" in shown:
        job = shown["job"]
        out = [f"run {shown['run']}, job {job['name']}", *field_lines(_job_fields(job)), ""]
        return out + table_lines(["STEP", "STATUS", "EXIT", "ATTEMPTS", "DURATION", "REASON"],
                            [_step_row(s) for s in job["steps"]])
    out = [f"run {shown['run']}", *field_lines(_run_fields(shown)), ""]
    return out + table_lines(["JOB", "STATUS", "DURATION", "ATTEMPTS", "STEPS", "EXIT", "REASON"],
                        [_job_row(j) for j in shown["jobs"]])


# --- picking a part --------------------------------------------------------------------


def _job(run: Json, name: str) -> Json:
    jobs: list[Json] = run.get("jobs") or []
    found = next((j for j in jobs if j["name"] == name), None)
    if found is None:
        raise NoSuchPart(f"run {run['id']} has no job {name!r}{_listing('jobs', jobs)}")
    return found


def _step(run: Json, job: str | None, name: str) -> tuple[Json, Json]:
    """(job, step); without ``job``, the one job that has a step ``name``."""
    if job is not None:
        found = _job(run, job)
        step = next((s for s in found["steps"] if s["name"] == name), None)
        if step is None:
            raise NoSuchPart(f"job {job!r} of run {run['id']} has no step {name!r}"
                             f"{_listing('steps', found['steps'])}")
        return found, step
    holders = [(j, s) for j in run.get("jobs") or [] for s in j["steps"] if s["name"] == name]
    if len(holders) == 1:
        return holders[0]
    if holders:
        raise NoSuchPart(f"jobs {', '.join(j['name'] for j, _ in holders)} of run "
                         f"{run['id']} each have a step {name!r}: name one with --job")
    every = sorted({s["name"] for j in run.get("jobs") or [] for s in j["steps"]})
    raise NoSuchPart(f"no job of run {run['id']} has a step {name!r}"
                     f"{_listing('steps', [{'name': s} for s in every])}")


def _listing(what: str, parts: Sequence[Json]) -> str:
    names = [p["name"] for p in parts]
    return f" ({what}: {', '.join(names)})" if names else f" (it has no {what})"


# --- summaries --------------------------------------------------------------------------


def _run_summary(run: Json) -> Json:
    jobs = run.get("jobs") or []
    return {
        "project": run.get("project", ""), "status": run["status"],
        "trigger": run.get("trigger", ""), "branch": run.get("branch", ""),
        "commit": run.get("commit", ""), "created_at": run.get("created_at", ""),
        "finished_at": run.get("finished_at", ""), "duration_s": run.get("duration_s"),
        "reason": run.get("reason", ""), "overrides": list(run.get("overrides") or []),
        "jobs_by_status": dict(Counter(j["status"] for j in jobs)),
        "steps_by_status": dict(Counter(s["status"] for j in jobs for s in j["steps"])),
        "retried_steps": sum(1 for j in jobs for s in j["steps"] if (s.get("attempt") or 0) > 1),
        "jobs": [_job_summary(j) for j in jobs],
    }


def _job_summary(job: Json) -> Json:
    steps = [_step_summary(s) for s in job["steps"]]
    return {
        "name": job["name"], "status": job["status"], "needs": list(job.get("needs") or []),
        "worker": job.get("worker", ""), "queued_at": job.get("queued_at", ""),
        "started_at": job.get("started_at", ""), "finished_at": job.get("finished_at", ""),
        "duration_s": job.get("duration_s"), "attempts": job.get("attempt", 0),
        "reason": job.get("reason", ""), "reused_from": job.get("reused_from", ""),
        "steps_ok": sum(1 for s in steps if s["status"] == "success"),
        "exit_codes": [s["exit_code"] for s in steps
                       if s["exit_code"] not in (None, 0)],
        "steps": steps,
    }


def _step_summary(step: Json) -> Json:
    return {"name": step["name"], "status": step["status"], "exit_code": step.get("exit_code"),
            "attempts": step.get("attempt", 0), "started_at": step.get("started_at", ""),
            "finished_at": step.get("finished_at", ""), "duration_s": step.get("duration_s"),
            "reason": step.get("reason", ""), "log_truncated": step.get("log_truncated", "")}


# --- text -------------------------------------------------------------------------------


def _run_fields(run: Json) -> list[tuple[str, str]]:
    rows = [("status", run["status"]), ("project", run["project"] or "-"),
            ("trigger", run["trigger"] or "-"), ("branch", run["branch"] or "-"),
            ("commit", (run["commit"] or "-")[:12]), ("created", when(run["created_at"])),
            ("finished", when(run["finished_at"])), ("duration", duration(run["duration_s"])),
            ("jobs", _counts(run["jobs_by_status"])),
            ("steps", _counts(run["steps_by_status"]))]
    if run["retried_steps"]:
        rows.append(("retried", f"{run['retried_steps']} step(s) took more than one attempt"))
    rows += [("set", written) for written in run["overrides"]]
    if run["reason"]:
        rows.append(("reason", first_line(run["reason"])))
    return rows


def _job_fields(job: Json) -> list[tuple[str, str]]:
    rows = [("status", job["status"]), ("needs", ", ".join(job["needs"]) or "-"),
            ("worker", job["worker"] or "-"), ("queued", when(job["queued_at"])),
            ("started", when(job["started_at"])), ("finished", when(job["finished_at"])),
            ("duration", duration(job["duration_s"])), ("attempts", str(job["attempts"])),
            ("steps", f"{job['steps_ok']} of {len(job['steps'])} succeeded")]
    if job["reused_from"]:
        rows.append(("reused from", job["reused_from"]))
    if job["reason"]:
        rows.append(("reason", first_line(job["reason"])))
    return rows


def _step_fields(step: Json) -> list[tuple[str, str]]:
    code = step["exit_code"]
    rows = [("status", step["status"]), ("exit code", "-" if code is None else str(code)),
            ("attempts", str(step["attempts"])), ("started", when(step["started_at"])),
            ("finished", when(step["finished_at"])), ("duration", duration(step["duration_s"]))]
    if step["reason"]:
        rows.append(("reason", first_line(step["reason"])))
    if step["log_truncated"]:
        rows.append(("log", step["log_truncated"]))
    return rows


def _job_row(job: Json) -> list[str]:
    return [job["name"], job["status"], duration(job["duration_s"]), str(job["attempts"]),
            f"{job['steps_ok']}/{len(job['steps'])}",
            ",".join(str(c) for c in job["exit_codes"]) or "-", first_line(job["reason"])]


def _step_row(step: Json) -> list[str]:
    code = step["exit_code"]
    return [step["name"], step["status"], "-" if code is None else str(code),
            str(step["attempts"]), duration(step["duration_s"]), first_line(step["reason"])]


def _counts(by_status: dict[str, int]) -> str:
    failed = {s: n for s, n in by_status.items() if s in _FAILED}
    rest = {s: n for s, n in by_status.items() if s not in _FAILED}
    return ", ".join(f"{n} {s}" for s, n in [*failed.items(), *rest.items()]) or "none"
