"""Live terminal output of a run: step status lines and log lines as they happen."""

from __future__ import annotations

import sys
from typing import TextIO

from shared import events as ev
from shared.ports.logstore import LogLine

__all__ = ["Display"]

_GREEN, _RED, _YELLOW, _DIM, _BOLD, _RESET = (
    "\033[32m", "\033[31m", "\033[33m", "\033[2m", "\033[1m", "\033[0m")

_STATUS_COLOUR = {"success": _GREEN, "failure": _RED, "timeout": _RED, "errored": _RED,
                  "cancelled": _YELLOW, "skipped": _DIM}


class Display:
    def __init__(self, out: TextIO = sys.stdout, colour: bool | None = None) -> None:
        self.out = out
        self.colour = out.isatty() if colour is None else colour
        self.run_id = "RUN"  # named in what to type to approve a job (header gives it)

    def _paint(self, colour: str, text: str) -> str:
        return f"{colour}{text}{_RESET}" if self.colour else text

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def header(self, run_id: str, file: str, branch: str, executor: str) -> None:
        self.run_id = run_id
        branch_text = f" on branch {branch}" if branch else ""
        self._print(self._paint(_BOLD, f"run {run_id}: {file}{branch_text} ({executor})"))

    def note(self, text: str) -> None:
        self._print(self._paint(_YELLOW, text))

    def log_line(self, line: LogLine) -> None:
        prefix = self._paint(_DIM, f"[{line.job}/{line.step}]")
        text = self._paint(_RED, line.text) if line.stream == "stderr" and self.colour \
            else line.text
        self._print(f"{prefix} {text}")

    def event(self, event: ev.Event) -> None:
        text = self._describe(event)
        if text:
            self._print(text)

    def _describe(self, e: ev.Event) -> str:
        match e:
            case ev.RunPlanned(plan=plan, warnings=warnings):
                jobs = ", ".join(j.name for j in plan.jobs)
                lines = [f"planned: {jobs}", *(f"warning: {w}" for w in warnings)]
                return "\n".join(lines)
            case ev.JobStarted(job=job):
                return self._paint(_BOLD, f"[{job}] started")
            case ev.JobSkipped(job=job, reason=reason):
                return self._paint(_DIM, f"[{job}] skipped: {reason}")
            case ev.JobReused(job=job, from_run=run, status=status):
                return self._paint(_DIM, f"[{job}] reused from run {run}: {status}")
            case ev.JobFinished(job=job, status=status, duration_s=d, reason=reason):
                tail = f": {reason}" if reason and status != "success" else ""
                return self._paint(_STATUS_COLOUR.get(status, ""),
                                   f"[{job}] {status} in {d:.1f}s{tail}")
            case ev.StepStarted(job=job, step=step, attempt=attempt):
                again = f" (attempt {attempt})" if attempt > 1 else ""
                return self._paint(_BOLD, f"[{job}/{step}] running{again}")
            case ev.StepFinished(job=job, step=step, status=status, duration_s=d, reason=reason):
                tail = f": {reason}" if reason and status != "success" else ""
                return self._paint(_STATUS_COLOUR.get(status, ""),
                                   f"[{job}/{step}] {status} in {d:.1f}s{tail}")
            case ev.StepSkipped(job=job, step=step, reason=reason):
                return self._paint(_DIM, f"[{job}/{step}] skipped: {reason}")
            case ev.StepLogTruncated(job=job, step=step):
                return self._paint(_YELLOW, f"[{job}/{step}] {e.message}")
            case ev.ImagePushed(job=job, step=step, tags=tags, digest=digest):
                return f"[{job}/{step}] pushed {', '.join(tags)} ({digest})"
            case ev.JobAwaitingApproval(job=job, role=role, deadline=deadline):
                until = f" until {deadline}" if deadline else ""
                return self._paint(_YELLOW, f"[{job}] waiting for approval by a {role}{until}:"
                                            f" cyclone approve {self.run_id} {job}")
            case ev.JobApproved(job=job, by=by):
                return self._paint(_BOLD, f"[{job}] approved by {by}")
            case ev.JobRejected(job=job, by=by, reason=reason):
                who = f" by {by}" if by else ""
                return self._paint(_RED, f"[{job}] rejected{who}: {reason or 'no reason given'}")
            case ev.DeploymentSucceeded(job=job, environment=env, target=target, image=image):
                return self._paint(_GREEN, f"[{job}] deployed {image} to {env} ({target})")
            case ev.DeploymentRolledBack(job=job, environment=env, previous=previous,
                                         reason=reason):
                return self._paint(_RED, f"[{job}] {env}: rolled back to {previous}: {reason}")
            case ev.DeploymentFailed(job=job, environment=env, reason=reason):
                return self._paint(_RED, f"[{job}] {env}: deployment failed: {reason}")
            case ev.RunCancelRequested():
                return self._paint(_YELLOW, "cancelling...")
            case ev.RunSucceeded():
                return self._paint(_GREEN + _BOLD, "run succeeded")
            case ev.RunFailed(reason=reason):
                return self._paint(_RED + _BOLD, f"run failed: {reason}")
            case ev.RunCancelled():
                return self._paint(_YELLOW + _BOLD, "run cancelled")
            case ev.RunErrored(reason=reason):
                return self._paint(_RED + _BOLD, f"run errored: {reason}")
        return ""
