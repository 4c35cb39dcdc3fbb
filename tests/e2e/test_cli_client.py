"""The ``cyclone`` client commands end to end: the real CLI as a subprocess, talking HTTP to
a real ``cyclone up`` server, which clones from a real ``git daemon`` and runs steps in
the real Docker daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from tests.docker_support import AT_THE_GATE, TEST_IMAGE, open_gate_async
from tests.e2e.server_support import CycloneServer, server_fixture
from tests.git_support import GitRepo, GitServer, git_server_fixture, unused_port
from tests.support import eventually

__all__ = ["git_server_fixture", "server_fixture"]  # the fixtures these tests use

TIMEOUT = 180.0  # one CLI command, a run's clone and containers included
RUN_LINE = re.compile(r"^run ([0-9a-z]+): started", re.MULTILINE)


def pipeline(*commands: str, step: str = "greet") -> str:
    lines = "\n".join(f"          - {json.dumps(c)}" for c in commands)
    return (f"jobs:\n  build:\n    image: {TEST_IMAGE}\n    steps:\n"
            f"      - name: {step}\n        run:\n{lines}\n")


PASSING = pipeline('echo "hello from $CYCLONE_JOB on $CYCLONE_BRANCH"',
                   'echo "greeting=$GREETING"')
FAILING = pipeline('echo "about to fail"', "exit 3", step="check")
SLOW = pipeline('echo "sleeping now"', "sleep 300", step="wait")
PAUSING = pipeline('echo "first line"', AT_THE_GATE, 'echo "second line"', step="talk")


@dataclass
class Result:
    code: int
    out: str
    err: str


async def cyclone(env: Mapping[str, str], *args: str, timeout: float = TIMEOUT,
                  stdin: str = "") -> Result:
    """Run ``cyclone ARGS`` to its end with ``env`` (and ``stdin`` as its input)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cyclone.cli", *args, env=dict(env),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin.encode())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    result = Result(proc.returncode, out.decode(), err.decode())
    assert "Traceback" not in result.err, result.err
    return result


async def ok(env: Mapping[str, str], *args: str) -> str:
    """``cyclone ARGS``, which must exit 0; its stdout."""
    done = await cyclone(env, *args)
    assert done.code == 0, f"cyclone {' '.join(args)} exited {done.code}:\n{done.out}{done.err}"
    return done.out


async def json_of(env: Mapping[str, str], *args: str) -> Any:
    return json.loads(await ok(env, *args, "--json"))


class Background:
    """A CLI command running in the background, its stdout and stderr read as written."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.output = ""

    async def read_until(self, needle: str, timeout: float = TIMEOUT) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while needle not in self.output:
                chunk = await self.proc.stdout.read(65536)
                assert chunk, f"exited before printing {needle!r}:\n{self.output}"
                self.output += chunk.decode()

    async def finish(self, timeout: float = TIMEOUT) -> int:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            self.output += (await self.proc.stdout.read()).decode()
            return await self.proc.wait()


@contextlib.asynccontextmanager
async def background(env: Mapping[str, str], *args: str) -> AsyncIterator[Background]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cyclone.cli", *args, env=dict(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        yield Background(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


def started_run(output: str) -> str:
    match = RUN_LINE.search(output)
    assert match, f"no run id in output:\n{output}"
    return match.group(1)


def without_token(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "CYCLONE_TOKEN"}


@pytest.fixture
def demo(git_server: GitServer) -> GitRepo:
    """A repository whose branches hold a passing, a failing, a slow and a pausing
    pipeline (``main``, ``broken``, ``slow``, ``pause``)."""
    repo = git_server.create("demo")
    for branch, text in (("main", PASSING), ("broken", FAILING), ("slow", SLOW),
                         ("pause", PAUSING)):
        repo.commit({".cyclone.yml": text}, message=f"{branch} pipeline", branch=branch)
    return repo


# --- projects ----------------------------------------------------------------------------


async def test_project_add_list_show_update_delete(server: CycloneServer) -> None:
    env = server.env
    added = await ok(env, "project", "add", "web", "git://example.invalid/web.git",
                     "--branch", "trunk", "--env", "A=1", "--env", "B=two",
                     "--max-concurrent", "2")
    assert re.search(r"^branch\s+trunk$", added, re.MULTILINE), added
    assert re.search(r"^env\s+A=1, B=two$", added, re.MULTILINE), added

    table = (await ok(env, "project", "list")).splitlines()
    assert table[0].split() == ["NAME", "REPO", "BRANCH", "PIPELINE", "FILE", "MAX", "RUNS"]
    assert table[1].split() == ["web", "git://example.invalid/web.git", "trunk",
                                ".cyclone.yml", "2"]
    listed = await json_of(env, "project", "list")
    assert [p["name"] for p in listed["projects"]] == ["web"]

    updated = await json_of(env, "project", "update", "web", "--pipeline-file", "ci.yml",
                            "--env", "A=3", "--max-concurrent", "0")
    assert (updated["pipeline_file"], updated["env"], updated["max_concurrent_runs"]) == (
        "ci.yml", {"A": "3"}, 0)
    shown = await json_of(env, "project", "show", "web")
    assert shown["default_branch"] == "trunk"  # not given to update: unchanged
    assert shown["pipeline_file"] == "ci.yml"
    assert re.search(r"^max runs\s+unlimited$", await ok(env, "project", "show", "web"),
                     re.MULTILINE)

    assert (await ok(env, "project", "delete", "web")).strip() == "project web deleted"
    gone = await cyclone(env, "project", "show", "web")
    assert (gone.code, gone.err.strip()) == (1, "cyclone: no project 'web'")
    assert (await json_of(env, "project", "list"))["projects"] == []


async def test_project_input_errors_exit_2_with_the_servers_detail(server: CycloneServer) -> None:
    env = server.env
    await ok(env, "project", "add", "web", "git://example.invalid/web.git")
    again = await cyclone(env, "project", "add", "web", "git://example.invalid/other.git")
    assert (again.code, again.err.strip()) == (2, "cyclone: project 'web' already exists")
    bad = await cyclone(env, "project", "add", "web2", "git://x/y.git", "--env", "1A=x")
    assert bad.code == 2 and bad.err.startswith("cyclone: env: "), bad.err
    assert "1A" in bad.err
    nothing = await cyclone(env, "project", "update", "web")
    assert nothing.code == 2 and "nothing to update" in nothing.err
    malformed = await cyclone(env, "project", "add", "web3", "git://x/y.git", "--env", "novalue")
    assert malformed.code == 2 and "expected KEY=VALUE" in malformed.err


# --- runs --------------------------------------------------------------------------------


@pytest.mark.usefixtures("docker_ready")
async def test_runs_followed_listed_shown_and_replayed(server: CycloneServer, demo: GitRepo) -> None:
    env = server.env
    await ok(env, "project", "add", "demo", demo.url, "--env", "GREETING=hi")

    passing = await cyclone(env, "trigger", "demo", "--follow", "--no-color")
    assert passing.code == 0, passing.out + passing.err
    assert "[build/greet] hello from build on main" in passing.out
    assert "[build/greet] greeting=hi" in passing.out  # the project's env reaches the step
    assert passing.out.rstrip().endswith("run succeeded")
    good = started_run(passing.out)

    failing = await cyclone(env, "trigger", "demo", "--ref", "broken", "--follow",
                            "--no-color")
    assert failing.code == 1, failing.out + failing.err
    assert "[build/check] about to fail" in failing.out
    assert failing.out.rstrip().endswith("run failed")
    bad = started_run(failing.out)

    history = (await ok(env, "logs", "--no-color", good)).splitlines()
    printed = [line for line in history if line.startswith("[build/greet] ")
               and not line.startswith("[build/greet] + ")]  # not the command echoes
    assert printed == ["[build/greet] hello from build on main", "[build/greet] greeting=hi"]
    logged = set(history)
    assert history == [line for line in passing.out.splitlines() if line in logged]
    # --follow also showed job and step status as they changed, like `cyclone run`
    assert passing.out.index("[build] started") < passing.out.index("[build/greet] greeting=hi")
    assert "[build/greet] success in" in passing.out
    lines = [json.loads(line) for line in (await ok(env, "logs", "--json", bad)).splitlines()]
    assert [line["text"] for line in lines if line["job"] == "build"
            and not line["text"].startswith("+ ")] == ["about to fail"]
    assert [line["i"] for line in lines] == list(range(len(lines)))

    runs = {r["id"]: r for r in (await json_of(env, "runs"))["runs"]}
    assert {good: "success", bad: "failure"} == {i: r["status"] for i, r in runs.items()}
    assert runs[good]["commit"] == demo.head("main")
    only_failed = await json_of(env, "runs", "--status", "failure")
    assert [r["id"] for r in only_failed["runs"]] == [bad]
    table = await ok(env, "runs", "--project", "demo")
    assert re.search(rf"^{bad}\s+demo\s+failure\s+broken\s+{demo.head('broken')[:8]}\s",
                     table, re.MULTILINE), table
    page = await cyclone(env, "runs", "--limit", "1")
    assert page.code == 0 and good not in page.out and bad in page.out  # newest first
    assert "--cursor" in page.err

    shown = await ok(env, "show", bad)
    assert re.search(r"^status\s+failure$", shown, re.MULTILINE), shown
    assert re.search(r"^build\s+failure\s", shown, re.MULTILINE), shown
    assert re.search(r"^\s+check\s+failure\s+3\s+1\s", shown, re.MULTILINE), shown

    summed = await ok(env, "report", bad)  # the same run, summed up
    assert re.search(r"^jobs\s+1 failure$", summed, re.MULTILINE), summed
    assert re.search(r"^build\s+failure\s+\S+\s+1\s+0/1\s+3\s+step failed: check$", summed,
                     re.MULTILINE), summed
    step = await json_of(env, "report", bad, "--step", "check")
    assert (step["job"], step["step"]["exit_code"], step["step"]["attempts"]) == ("build", 3, 1)
    unknown = await cyclone(env, "report", bad, "--job", "biuld")
    assert (unknown.code, unknown.err.strip()) == (
        1, f"cyclone: run {bad} has no job 'biuld' (jobs: build)")

    rerun = await cyclone(env, "rerun", good, "--follow", "--no-color")
    assert rerun.code == 0, rerun.out + rerun.err
    assert started_run(rerun.out) != good
    assert "[build/greet] greeting=hi" in rerun.out


@pytest.mark.usefixtures("docker_ready")
async def test_events_of_a_run_start_with_run_requested_and_its_overrides(server: CycloneServer, demo: GitRepo) -> None:
    env = server.env
    await ok(env, "project", "add", "demo", demo.url)
    # --set: a key of the pipeline file for this run only, recorded in its request
    followed = await cyclone(env, "trigger", "demo", "--follow", "--no-color",
                             "--set", "jobs.build.env={GREETING: from-set}")
    assert "[build/greet] greeting=from-set" in followed.out, followed.out + followed.err
    run_id = started_run(followed.out)
    table = (await ok(env, "events", run_id)).splitlines()
    assert table[0].split() == ["SEQ", "TS", "TYPE", "DATA"]
    first = table[1].split()
    assert (first[0], first[3]) == ("1", "RunRequested"), table[1]
    events = (await json_of(env, "events", run_id))["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "RunRequested" and events[-1]["type"] == "RunSucceeded"
    assert events[0]["data"]["overrides"] == ["jobs.build.env={GREETING: from-set}"]
    assert len(table) == len(events) + 1


@pytest.mark.usefixtures("docker_ready")
async def test_cancel_a_long_run_ends_its_followers(server: CycloneServer, demo: GitRepo) -> None:
    env = server.env
    await ok(env, "project", "add", "demo", demo.url)
    run_id = (await ok(env, "trigger", "demo", "--ref", "slow")).strip()
    assert re.fullmatch(r"[0-9a-z]+", run_id), run_id  # the id alone, for scripts
    async with background(env, "logs", "-f", "--no-color", run_id) as follower:
        await follower.read_until("[build/wait] sleeping now")
        cancelled = await ok(env, "cancel", run_id)
        assert cancelled.strip() == f"run {run_id}: cancel requested (status: cancelling)"
        assert await follower.finish() == 1
    assert follower.output.rstrip().endswith("run cancelled")

    async def status() -> bool:
        return bool((await json_of(env, "show", run_id))["status"] == "cancelled")

    await eventually(status, what="the run to be cancelled")
    again = await cyclone(env, "cancel", run_id)
    assert again.code == 2 and "already ended" in again.err, again.err


class CuttingProxy:
    """A TCP proxy in front of the server whose open connections can be cut, as a
    network failure would; new connections are still forwarded."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cuts = 0
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        for pair in list(self._open):
            for writer in pair:
                writer.transport.abort()
        self.cuts += 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self._open.add(pair)
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            self._open.discard(pair)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass  # the other side was cut
    finally:
        writer.close()


@pytest.mark.usefixtures("docker_ready")
async def test_follow_resumes_after_a_dropped_connection(server: CycloneServer, demo: GitRepo) -> None:
    env = server.env
    await ok(env, "project", "add", "demo", demo.url)
    run_id = (await ok(env, "trigger", "demo", "--ref", "pause")).strip()
    host, _, port = server.url.removeprefix("http://").partition(":")
    async with CuttingProxy(host, int(port)) as proxy:
        async with background(env, "logs", "-f", "--no-color", "--server", proxy.url,
                              run_id) as follower:
            await follower.read_until("[build/talk] first line")
            proxy.cut()  # the step waits at its gate before its second line: mid-run
            await follower.read_until("reconnecting")
            await open_gate_async(run_id)
            assert await follower.finish() == 0, follower.output
    out = follower.output
    assert "reconnecting" in out, out
    assert out.count("[build/talk] first line") == 1, out  # resumed after it: no repeat
    assert out.count("[build/talk] second line") == 1, out
    assert out.rstrip().endswith("run succeeded")


# --- tokens and errors -------------------------------------------------------------------


async def test_users_roles_and_their_tokens_from_the_cli(server: CycloneServer,
                                                         demo: GitRepo) -> None:
    env = server.env
    await ok(env, "project", "add", "demo", demo.url)
    await ok(env, "project", "add", "other", demo.url)
    added = await cyclone(env, "user", "add", "alice", "--role", "demo=viewer",
                          stdin="alice's long password\n")
    assert (added.code, added.out.strip()) == (0, "user alice added")
    listed = await ok(env, "user", "list")
    assert re.search(r"^alice\s+demo=viewer$", listed, re.MULTILINE), listed
    token = (await cyclone(env, "token", "create", "alice-cli", "--user", "alice")).out.strip()
    as_alice = {**without_token(env), "CYCLONE_TOKEN": token}

    refused = await cyclone(as_alice, "trigger", "demo")
    assert (refused.code, refused.err.strip()) == (
        1, "cyclone: needs the developer role in project 'demo' (you have viewer)")
    assert (await ok(env, "user", "grant", "alice", "demo", "developer")).strip() == (
        "alice is developer in demo")
    assert (await cyclone(as_alice, "trigger", "demo")).code == 0
    assert [p["name"] for p in (await json_of(as_alice, "project", "list"))["projects"]] == [
        "demo"]  # "other" is not hers to see
    denied = await cyclone(as_alice, "user", "list")
    assert (denied.code, denied.err.strip()) == (1, "cyclone: needs the admin role")

    read_only = (await cyclone(as_alice, "token", "create", "ro", "--read-only")).out.strip()
    as_reader = {**without_token(env), "CYCLONE_TOKEN": read_only}
    assert (await json_of(as_reader, "runs"))["runs"]
    refused = await cyclone(as_reader, "trigger", "demo")
    assert (refused.code, refused.err.strip()) == (1, "cyclone: this token is read-only")

    assert (await ok(env, "user", "rm", "alice")).strip() == (
        "user alice removed, and their tokens revoked")
    gone = await cyclone(as_reader, "runs")
    assert gone.code == 1 and "invalid or revoked token" in gone.err


async def test_token_create_list_revoke(server: CycloneServer) -> None:
    env = server.env
    created = await cyclone(env, "token", "create", "ci")
    assert created.code == 0 and "shown only this once" in created.err
    secret = created.out.strip()
    tokens = (await json_of(env, "token", "list"))["tokens"]
    ci = next(t for t in tokens if t["name"] == "ci")
    assert "token" not in ci  # the secret is never listed
    assert re.search(rf"^{ci['id']}\s+ci\s", await ok(env, "token", "list"), re.MULTILINE)

    as_ci = {**without_token(env), "CYCLONE_TOKEN": secret}
    assert (await json_of(as_ci, "runs"))["runs"] == []
    assert (await json_of(as_ci, "token", "list"))["tokens"] == []  # sees no one's tokens
    refused = await cyclone(as_ci, "token", "create", "more")
    assert (refused.code, refused.err.strip()) == (
        1, "cyclone: a token of another user, or of no user, needs the admin role")

    assert (await ok(env, "token", "revoke", ci["id"])).strip() == f"token {ci['id']} revoked"
    revoked = await cyclone(env, "runs", "--token", secret)
    assert (revoked.code, revoked.err.strip()) == (1, "cyclone: invalid or revoked token")
    missing = await cyclone(env, "token", "revoke", ci["id"])
    assert missing.code == 1 and "no token" in missing.err


async def test_missing_token_gets_the_servers_401_detail(server: CycloneServer) -> None:
    done = await cyclone(without_token(server.env), "project", "list")
    assert done.code == 1
    assert done.err.startswith("cyclone: missing credentials: a bearer token"), done.err
    assert "CYCLONE_TOKEN" in done.err


async def test_unknown_run_is_a_clear_failure(server: CycloneServer) -> None:
    for args in (("show", "nope"), ("logs", "nope"), ("logs", "-f", "nope"),
                 ("events", "nope"), ("cancel", "nope")):
        done = await cyclone(server.env, *args)
        assert (done.code, done.err.strip()) == (1, "cyclone: no run 'nope'"), args


async def test_unreachable_server_is_a_clear_message() -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    env = {**os.environ, "CYCLONE_SERVER": url, "CYCLONE_TOKEN": "whatever"}
    done = await cyclone(env, "runs")
    assert done.code == 1
    assert done.err.startswith(f"cyclone: cannot reach the Cyclone server at {url}: "), done.err
    assert done.out == ""
    flag = await cyclone(env, "project", "list", "--server", "not a url")
    assert flag.code == 2 and "invalid server URL" in flag.err
