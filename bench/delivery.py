"""Build -> push -> deploy of ``examples/keepwork`` (branch dev), on a real ``cyclone up``,
against the same work done by hand with the ``docker`` CLI.

Starts a registry (Debian's ``docker-registry``, no auth, a free 127.0.0.1 port), a
``git daemon`` holding the example (pointed at that registry and a free port for the
dev server) and ``cyclone up`` (fresh home, one worker). Each round commits a change to
``site/index.html`` on ``dev`` (so the image's last layer is new, as a real change
makes it), triggers the project and follows the run's events to its end; then the
same three things by hand, timed one after the other: ``docker build`` (same context,
same args), ``docker push``, and a replace of a container (``docker rm -f``, ``docker
run -d`` with the port, then polling until its health check says healthy).

Printed per round and as medians: Cyclone's trigger -> ``RunSucceeded``; its phases from
the run's events (checkout and planning; the build step, build and push together; the
``unit`` job in the image; the deploy step; what is left: queueing, workspace,
containers, event hops); and the hand-made build, push and deploy. Cyclone's overhead =
its total - (hand build + push + deploy); the ``unit`` job, which the hand-made path
does not run, is shown apart.

    python bench/delivery.py [--rounds 3] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from cluster_support import ROOT, check_docker, embedded_mode, workdir

from tests.git_support import GitServer, unused_port
from tests.registry_support import RegistryServer

EXAMPLE = ROOT / "examples" / "keepwork"
DEV_CONTAINER = "keepwork-dev"
HAND_CONTAINER = "keepwork-bench-hand"
TERMINAL = {"RunSucceeded", "RunFailed", "RunCancelled", "RunErrored", "RunSkipped"}


def ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["ts"])).timestamp()


def example(registry: str, port: int) -> dict[str, str]:
    files = {str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*")
             if p.is_file()}
    files[".cyclone.yml"] = (files[".cyclone.yml"].replace("127.0.0.1:5000", registry)
                             .replace("127.0.0.1:8900:80", f"127.0.0.1:{port}:80"))
    return files


async def follow(http: aiohttp.ClientSession, url: str, token: str, run_id: str
                 ) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    async with http.get(f"{url}/api/v1/runs/{run_id}/events?follow=1", headers=headers,
                        timeout=aiohttp.ClientTimeout(total=600)) as response:
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data:") and '"type"' in line:
                events.append(json.loads(line[5:]))
                if events[-1]["type"] in TERMINAL:
                    return events
    return events


def phases(events: list[dict[str, Any]], triggered: float) -> dict[str, float]:
    def step(job: str, name: str) -> float:
        return next(float(e["data"]["duration_s"]) for e in events
                    if e["type"] == "StepFinished" and e["data"]["job"] == job
                    and e["data"]["step"] == name)

    end = next(e for e in events if e["type"] in TERMINAL)
    if end["type"] != "RunSucceeded":
        raise SystemExit(f"the run did not succeed: {json.dumps(events)[-2000:]}")
    planned = next(ts(e) for e in events if e["type"] == "RunPlanned")
    total = ts(end) - triggered
    build, unit = step("image", "app"), step("unit", "step-1")
    deploy = step("dev", "step-1")
    return {"total": total, "checkout+plan": planned - triggered, "build+push": build,
            "unit job's step": unit, "deploy": deploy,
            "rest (queues, workspace, containers, events)":
                total - (planned - triggered) - build - unit - deploy}


def by_hand(registry: str, context: Path, port: int, round_: int) -> dict[str, float]:
    image = f"{registry}/keepwork/hand:r{round_}"

    def timed(*command: str) -> float:
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - started

    build = timed("docker", "build", "-q", "--build-arg", "KEEPWORK_ENV=dev", "-t", image,
                  str(context))
    push = timed("docker", "push", "-q", image)
    started = time.perf_counter()
    subprocess.run(["docker", "rm", "-f", HAND_CONTAINER], capture_output=True)
    subprocess.run(["docker", "run", "-d", "--name", HAND_CONTAINER, "-p",
                    f"127.0.0.1:{port}:80", image], check=True, capture_output=True)
    while subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}",
                          HAND_CONTAINER], capture_output=True,
                         text=True).stdout.strip() != "healthy":
        time.sleep(0.1)
    return {"build": build, "push": push, "deploy": time.perf_counter() - started}


async def measure(rounds: int, keep: bool) -> None:
    check_docker()
    with workdir("delivery", keep) as work, contextlib.ExitStack() as stack:
        registry = RegistryServer(work / "registry")
        stack.callback(registry.stop)
        registry.start()
        git = GitServer(work / "git")
        stack.callback(git.stop)
        dev_port, hand_port = unused_port(), unused_port()
        repo = git.create("keepwork")
        repo.commit(example(registry.host, dev_port), message="keepwork", branch="dev")
        stack.callback(subprocess.run, ["docker", "rm", "-f", DEV_CONTAINER, HAND_CONTAINER],
                       capture_output=True)
        target = stack.enter_context(embedded_mode(work / "home", capacity=4))
        headers = {"Authorization": f"Bearer {target.token}"}
        cyclone: list[dict[str, float]] = []
        hand: list[dict[str, float]] = []
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{target.url}/api/v1/projects", headers=headers, json={
                    "name": "keepwork", "repo": repo.url, "default_branch": "dev"}) as r:
                assert r.status == 201, await r.text()
            # the example logs in; this registry takes anyone, the secret must exist
            async with http.put(f"{target.url}/api/v1/projects/keepwork/secrets/"
                                "REGISTRY_PASSWORD", headers=headers,
                                json={"value": "not-checked"}) as r:
                assert r.status == 200, await r.text()
            for n in range(rounds + 1):  # round 0 warms up (mirror, helper images)
                repo.commit({"site/index.html": f"<h1>keepwork {n}</h1>\n"}, branch="dev")
                triggered = time.time()
                async with http.post(f"{target.url}/api/v1/projects/keepwork/runs",
                                     headers=headers, json={}) as r:
                    run_id = (await r.json())["id"]
                got = phases(await follow(http, target.url, target.token, run_id), triggered)
                made = by_hand(registry.host, repo.work, hand_port, n)
                if n:
                    cyclone.append(got)
                    hand.append(made)
                    print(f"round {n}: cyclone {got['total']:.2f}s; by hand "
                          f"{sum(made.values()):.2f}s", flush=True)
    report(cyclone, hand)


def report(cyclone: list[dict[str, float]], hand: list[dict[str, float]]) -> None:
    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    print("\nCyclone, trigger -> run succeeded (medians):")
    for key in cyclone[0]:
        print(f"  {key:<45} {median(cyclone, key):6.2f} s")
    print("By hand (docker CLI):")
    for key in hand[0]:
        print(f"  {key:<45} {median(hand, key):6.2f} s")
    hand_total = statistics.median(sum(row.values()) for row in hand)
    total = median(cyclone, "total")
    unit = median(cyclone, "unit job's step")
    print(f"Cyclone's overhead over build + push + deploy by hand: {total - hand_total:.2f} s "
          f"(of which the unit job's own step {unit:.2f} s, which the hand path skips)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    try:
        asyncio.run(measure(args.rounds, args.keep))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
