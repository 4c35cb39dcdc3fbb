"""Cyclone's overhead over plain Docker.

A pipeline of 10 sequential trivial steps through `cyclone run`, against 10
sequential `docker run --rm` of the same image, in the same rounds; prints each
round's times and the median ratio. Target: median ratio <= 1.25.

    python bench/overhead.py [--rounds 5] [--image cyclone-test/busybox:latest]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = 10


def pipeline(image: str) -> str:
    steps = "\n".join(f"      - name: s{i}\n        run: \"true\"" for i in range(1, STEPS + 1))
    return f"jobs:\n  bench:\n    image: {image}\n    steps:\n{steps}\n"


def time_cyclone(workdir: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cyclone.cli", "run", "--no-color"],
                          cwd=workdir, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"cyclone run failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def time_docker(image: str) -> float:
    started = time.perf_counter()
    for _ in range(STEPS):
        subprocess.run(["docker", "run", "--rm", image, "true"], check=True,
                       capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image", default="cyclone-test/busybox:latest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "src"
        workdir.mkdir()
        (workdir / ".cyclone.yml").write_text(pipeline(args.image))
        env = {**os.environ, "CYCLONE_HOME": str(Path(tmp) / "home"),
               "CYCLONE_EXECUTOR": "docker"}
        time_cyclone(workdir, env)  # warm-up: creates the store, helper image, caches
        ratios = []
        for round_no in range(1, args.rounds + 1):
            docker_s = time_docker(args.image)
            cyclone_s = time_cyclone(workdir, env)
            ratios.append(cyclone_s / docker_s)
            print(f"round {round_no}: docker run x{STEPS} {docker_s:.2f}s, "
                  f"cyclone run {cyclone_s:.2f}s, ratio {ratios[-1]:.2f}", flush=True)
    print(f"median ratio cyclone/docker: {statistics.median(ratios):.2f} (target <= 1.25)")


if __name__ == "__main__":
    main()
