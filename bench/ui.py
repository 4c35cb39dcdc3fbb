"""The web UI in headless Chromium: how fast its pages show what they are for.

Starts a real ``cyclone up`` (``cluster_support.embedded_mode``: a fresh CYCLONE_HOME, a
free 127.0.0.1 port, the Docker executor, one worker of 8 jobs) serving the built UI
(``make ui``; ``CYCLONE_UI_DIST`` names another build), a ``git daemon`` with the
projects' repositories, and Debian's Chromium (``/usr/bin/chromium``, headless, through
Playwright, launched as the browser tests launch it: ``tests/browser_support.py``). The
browser is logged in once as an admin user (``POST /api/v1/session``: the session
cookie); every measured page opens in a fresh browser context holding that cookie and
nothing else: an empty HTTP cache, as on a first visit.

Times are taken inside the page: ``performance.now()`` (from the navigation's start) at
the first frame painted after the DOM holds what is waited for (a MutationObserver
checks it on every change; the stamp is a task queued from the next
``requestAnimationFrame``, which runs once that frame is painted).

* **Run page** (``--rounds``): a finished run of 50 jobs (ten layers of five, each
  needing one of the layer before; one ``true`` step each). Navigation to
  ``/runs/ID`` -> the first meaningful paint: the run's status, all 50 nodes of its job
  graph and all 50 rows of its timeline painted. Cold (a fresh context) and warm (the
  same page opened again in that context: assets cached). Also Chromium's own first
  contentful paint and largest contentful paint of the cold load. Target: cold median
  <= 300 ms.
* **A 1,000,000-line log** (``seq 1 1000000``, a finished run; ``--lines`` changes it):
  (a) a link to its last line (``/runs/ID#L<last>``), navigation -> the last screen
  painted (every line on screen has its text, the last line among them); (b) the run
  page open, the log focused, the End key (the keydown's time) -> the last screen
  painted; then the page's JS heap (Chromium's ``Runtime.getHeapUsage``, used bytes;
  also after a forced garbage collection) once the reader has also jumped to 40 places
  all over the log. Targets: both times <= 2 s (medians), heap <= 200 MB.
* **A live line** (``--live`` lines, one every 0.1 s): the run page open and following
  the log while the step waits at a gate, then the step prints each line with the time
  it printed it (the kernel's clock, read through busybox's ``adjtimex``: ns); the page
  stamps when each line is painted (``performance.timeOrigin + performance.now()``:
  the same clock). Printed: p50 / p99 / max of painted - printed. Target: p50 <= 200 ms.

    python bench/ui.py [--rounds 10] [--lines 1000000] [--live 300] [--keep]

Every server and the browser are stopped at the end, on an error, Ctrl-C or SIGTERM.
The machine's load average is printed: other work on it skews the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cluster_support import TEST_IMAGE, check_docker, embedded_mode, workdir
from playwright.sync_api import Browser, BrowserContext, Page, StorageState, sync_playwright

from tests.browser_support import CHROMIUM, Api, launch_chromium, ui_dist, wait_until
from tests.docker_support import AT_THE_GATE, open_gate
from tests.git_support import GitServer

TARGET_RUN_PAGE_MS = 300.0
TARGET_LAST_SCREEN_MS = 2000.0
TARGET_HEAP_MB = 200.0
TARGET_LIVE_P50_MS = 200.0
WIDE_JOBS, LAYER = 50, 5
USER, PASSWORD = "bench", "bench-ui-password"
TIMEOUT_S = 900.0
ENDED = ("success", "failure", "cancelled", "errored", "skipped", "timeout")

# Defined in every page before its own scripts: a promise of the time (performance.now())
# of the first frame painted once ``check()`` holds.
PAINTED = """
window.__painted = (check) => new Promise((resolve) => {
  const stamp = () => requestAnimationFrame(() => setTimeout(() => resolve(performance.now())));
  if (check()) return stamp();
  const observer = new MutationObserver(() => {
    if (check()) { observer.disconnect(); stamp(); }
  });
  observer.observe(document, {subtree: true, childList: true, characterData: true,
                              attributes: true});
});
window.__paints = {};
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__paints[entry.name] = entry.startTime;
}).observe({type: 'paint', buffered: true});
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__paints.lcp = entry.startTime;
}).observe({type: 'largest-contentful-paint', buffered: true});
"""

RUN_PAGE_SHOWN = f"""() =>
  !!document.querySelector('[data-test=run-status]')
  && document.querySelectorAll('[data-test=graph-node]').length >= {WIDE_JOBS}
  && document.querySelectorAll('[data-test=timeline-job]').length >= {WIDE_JOBS}"""


def last_screen_shown(last: int) -> str:
    """Every log line within the scroller's view has its text, the line ``last`` too."""
    return f"""() => {{
  const box = document.querySelector('[data-test=log-lines]')?.getBoundingClientRect()
  if (!box) return false
  const rows = [...document.querySelectorAll('[data-test=log-line]')].filter((row) => {{
    const r = row.getBoundingClientRect()
    return r.bottom > box.top + 1 && r.top < box.bottom - 1
  }})
  return rows.some((row) => row.dataset.index === '{last}')
    && rows.every((row) => !row.querySelector('.text.muted'))
}}"""


# Every line of the live step, as the page paints it: its number, when it was printed
# (ms since the epoch) and when it was painted.
LIVE_COLLECTOR = """
window.__live = new Map();
const seen = () => {
  const found = [];
  for (const text of document.querySelectorAll('[data-test=log-line] .text')) {
    const m = /^live (\\d+) (\\d+) (\\d+) (\\d+)$/.exec(text.textContent || '');
    if (m && !window.__live.has(m[1])) {
      const nano = Number(m[2]) & 0x2000;  // STA_NANO: tv_usec holds nanoseconds
      const printed = Number(m[3]) * 1000 + Number(m[4]) / (nano ? 1e6 : 1e3);
      window.__live.set(m[1], null);
      found.push([m[1], printed]);
    }
  }
  if (found.length) requestAnimationFrame(() => setTimeout(() => {
    const painted = performance.timeOrigin + performance.now();
    for (const [n, printed] of found) window.__live.set(n, [printed, painted]);
  }));
};
new MutationObserver(seen).observe(document, {subtree: true, childList: true,
                                              characterData: true});
"""


def wide_pipeline() -> str:
    jobs = []
    for n in range(WIDE_JOBS):
        needs = f"\n    needs: [j{n - LAYER:02d}]" if n >= LAYER else ""
        jobs.append(f"  j{n:02d}:{needs}\n    image: {TEST_IMAGE}\n    steps:\n"
                    "      - run: \"true\"\n")
    return "jobs:\n" + "".join(jobs)


def lines_pipeline(lines: int) -> str:
    return (f"jobs:\n  print:\n    image: {TEST_IMAGE}\n    steps:\n      - name: lines\n"
            f"        run: [\"seq 1 {lines}\"]\n")


def live_pipeline(lines: int) -> str:
    # adjtimex prints the status, then time.tv_sec and time.tv_usec (ns with STA_NANO)
    clock = ("adjtimex | sed -n 's/^ *status: *\\\\([0-9]*\\\\).*/\\\\1/p; "
             "s/^ *time.tv_sec: *//p; s/^ *time.tv_usec: *//p'")
    return (f"jobs:\n  live:\n    image: {TEST_IMAGE}\n    steps:\n      - name: gate\n"
            f"        run: [\"{AT_THE_GATE}\"]\n      - name: print\n"
            f"        run: [\"for i in $(seq 1 {lines}); do echo live $i $({clock}); "
            "sleep 0.1; done\"]\n")


class Bench:
    def __init__(self, api: Api, browser: Browser, state: StorageState) -> None:
        self.api = api
        self.browser = browser
        self.state = state

    @contextlib.contextmanager
    def page(self, script: str = "") -> Iterator[Page]:
        """A page in a fresh context: the session cookie, an empty cache."""
        context: BrowserContext = self.browser.new_context(
            storage_state=self.state, viewport={"width": 1280, "height": 800})
        try:
            context.set_default_timeout(TIMEOUT_S * 1000)
            context.add_init_script(PAINTED + script)
            yield context.new_page()
        finally:
            context.close()

    def start(self, project: str) -> str:
        return str(self.api.call("POST", f"/projects/{project}/runs", 202, {})["id"])

    def ended(self, run_id: str) -> Any:
        def check() -> Any:
            run = self.api.get(f"/runs/{run_id}")
            return run if run["status"] in ENDED else None

        run = wait_until(check, f"run {run_id} ends", timeout=TIMEOUT_S, interval=0.5)
        if run["status"] != "success":
            raise SystemExit(f"run {run_id} ended {run['status']}: {run['reason']}")
        return run

    def url(self, path: str) -> str:
        return f"{self.api.url}{path}"


def awaited(page: Page, promise: str, what: str, timeout_s: float = 120.0) -> Any:
    """The value of a promise of the page; an error when it takes over ``timeout_s``."""
    return page.evaluate(f"""Promise.race([{promise}, new Promise((_, fail) => setTimeout(
        () => fail(new Error({json.dumps(f"timed out: {what}")})), {timeout_s * 1000}))])""")


def run_page(bench: Bench, run_id: str, rounds: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"cold": [], "warm": [], "fcp": [], "lcp": []}
    for _ in range(rounds + 1):  # the first round warms the server and the browser up
        with bench.page(f"window.__meaningful = window.__painted({RUN_PAGE_SHOWN});") as page:
            page.goto(bench.url(f"/runs/{run_id}"), wait_until="commit")
            cold = float(awaited(page, "window.__meaningful", "the run page, cold"))
            paints = page.evaluate("window.__paints")
            page.goto(bench.url(f"/runs/{run_id}"), wait_until="commit")
            warm = float(awaited(page, "window.__meaningful", "the run page, warm"))
        figures["cold"].append(cold)
        figures["warm"].append(warm)
        figures["fcp"].append(float(paints.get("first-contentful-paint", 0.0)))
        figures["lcp"].append(float(paints.get("lcp", 0.0)))
    return {name: values[1:] for name, values in figures.items()}


def big_log(bench: Bench, run_id: str, total: int, rounds: int) -> dict[str, list[float]]:
    last = total - 1
    shown = last_screen_shown(last)
    figures: dict[str, list[float]] = {"link": [], "end": [], "heap": [], "heap_gc": []}
    for n in range(rounds + 1):
        with bench.page(f"window.__last = window.__painted({shown});") as page:
            page.goto(bench.url(f"/runs/{run_id}#L{total}"), wait_until="commit")
            figures["link"].append(float(awaited(page, "window.__last", "the log's end")))
        with bench.page() as page:
            page.goto(bench.url(f"/runs/{run_id}"))
            lines = page.get_by_test_id("log-lines")
            page.locator("[data-test=log-line][data-index='0'] .text:not(.muted)").wait_for()
            lines.click()
            page.evaluate(f"""() => {{ window.__end = new Promise((resolve) => {{
                addEventListener('keydown', (e) => {{ if (e.key === 'End')
                  window.__painted({shown}).then((t) => resolve(t - e.timeStamp)) }},
                  {{capture: true, once: true}}) }}) }}""")
            lines.press("End")
            figures["end"].append(float(awaited(page, "window.__end", "End: the log's end")))
            if n == rounds:  # the last round: the heap, once the reader has been about
                used, collected = heap(page, total)
                figures["heap"].append(used)
                figures["heap_gc"].append(collected)
    return {name: values[1:] if name in ("link", "end") else values
            for name, values in figures.items()}


def heap(page: Page, total: int) -> tuple[float, float]:
    """Used JS heap (MB), as it is and after a collection, after 40 jumps in the log."""
    for n in range(40):
        index = (n * 7919 * 104729) % total
        page.evaluate(f"""() => {{ const el = document.querySelector('[data-test=log-lines]')
            el.scrollTop = {index} * 16 - el.clientHeight / 2 }}""")
        page.locator(f"[data-test=log-line][data-index='{index}'] .text:not(.muted)").wait_for()
    cdp = page.context.new_cdp_session(page)
    used = float(cdp.send("Runtime.getHeapUsage")["usedSize"]) / 1e6
    cdp.send("HeapProfiler.collectGarbage")
    collected = float(cdp.send("Runtime.getHeapUsage")["usedSize"]) / 1e6
    cdp.detach()
    return used, collected


def live(bench: Bench, lines: int) -> list[float]:
    run_id = bench.start("live")
    with bench.page(LIVE_COLLECTOR) as page:
        page.goto(bench.url(f"/runs/{run_id}"))
        page.get_by_test_id("log-follow").wait_for()  # the log's stream is open

        def at_gate() -> bool:
            steps = bench.api.get(f"/runs/{run_id}")["jobs"][0]["steps"]
            return bool(steps) and steps[0]["status"] == "running"

        wait_until(at_gate, "the live step at its gate", timeout=TIMEOUT_S)
        page.locator("[data-test=log-line] .text", has_text="for i in $(seq 1").wait_for(
            state="attached")  # the gate's echo: the page follows the step's log
        open_gate(run_id)
        page.wait_for_function(
            f"() => [...window.__live.values()].filter(Boolean).length >= {lines}",
            timeout=TIMEOUT_S * 1000, polling=500)
        samples = page.evaluate("[...window.__live.values()]")
    bench.ended(run_id)
    return [painted_ms - printed_ms for printed_ms, painted_ms in samples]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def report(name: str, values: list[float], target: float | None = None, unit: str = "ms",
           digits: int = 0) -> None:
    line = (f"{name}: median {median(values):.{digits}f} {unit} (min {min(values):.{digits}f}, "
            f"max {max(values):.{digits}f}, n={len(values)})")
    if target is not None:
        line += f"  [<= {target:.0f} {unit}: {verdict(median(values) <= target)}]"
    print(line, flush=True)


def project(api: Api, git: GitServer, name: str, pipeline: str) -> None:
    repo = git.create(name)
    repo.commit({".cyclone.yml": pipeline}, message=f"{name} pipeline")
    api.call("POST", "/projects", 201, {"name": name, "repo": repo.url})


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="page loads measured per case")
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines of the big log")
    parser.add_argument("--live", type=int, default=300, help="live lines measured")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args()


def bench(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    target = stack.enter_context(embedded_mode(work / "home", capacity=8,
                                               CYCLONE_UI_DIST=str(ui_dist()),
                                               CYCLONE_MAX_PARALLEL_JOBS=str(LAYER)))
    api = Api(target.url, target.token)
    git = GitServer(work / "git")
    stack.callback(git.stop)
    api.call("POST", "/users", 201, {"name": USER, "password": PASSWORD, "admin": True})
    project(api, git, "wide", wide_pipeline())
    project(api, git, "big", lines_pipeline(args.lines))
    project(api, git, "live", live_pipeline(args.live))

    playwright = stack.enter_context(sync_playwright())
    browser = launch_chromium(playwright)
    stack.callback(browser.close)
    login = browser.new_context()
    answer = login.request.post(f"{target.url}/api/v1/session",
                                data={"user": USER, "password": PASSWORD})
    if not answer.ok:
        raise SystemExit(f"cannot log in: {answer.status} {answer.text()}")
    b = Bench(api, browser, login.storage_state())
    login.close()

    started = time.monotonic()
    wide_id, big_id = b.start("wide"), b.start("big")
    b.ended(wide_id)
    total = int(b.ended(big_id)["log_lines"])
    print(f"runs ready in {time.monotonic() - started:.0f} s: a {WIDE_JOBS}-job run, "
          f"a {total:,}-line log", flush=True)

    figures: dict[str, Any] = {}
    page = run_page(b, wide_id, args.rounds)
    report(f"run page, {WIDE_JOBS} jobs: navigation -> first meaningful paint, cold",
           page["cold"], TARGET_RUN_PAGE_MS)
    report("run page: the same, warm (assets cached)", page["warm"])
    report("run page: first contentful paint (cold)", page["fcp"])
    report("run page: largest contentful paint (cold)", page["lcp"])
    figures["run_page_ms"] = page

    log = big_log(b, big_id, total, max(3, args.rounds // 2))
    report(f"{total:,}-line log: link to its last line -> last screen painted", log["link"],
           TARGET_LAST_SCREEN_MS)
    report(f"{total:,}-line log: End key -> last screen painted", log["end"],
           TARGET_LAST_SCREEN_MS)
    heap_mb, heap_gc_mb = log["heap"][0], log["heap_gc"][0]
    print(f"{total:,}-line log: JS heap {heap_mb:.1f} MB used ({heap_gc_mb:.1f} MB after a "
          f"collection), after 40 jumps  [<= {TARGET_HEAP_MB:.0f} MB: "
          f"{verdict(heap_mb <= TARGET_HEAP_MB)}]", flush=True)
    figures["big_log_ms"] = {k: log[k] for k in ("link", "end")}
    figures["heap_mb"] = {"used": heap_mb, "after_gc": heap_gc_mb}

    delays = live(b, args.live)
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    print(f"live line, printed -> painted: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max "
          f"{max(delays):.0f} ms (n={len(delays)})  [p50 <= {TARGET_LIVE_P50_MS:.0f} ms: "
          f"{verdict(p50 <= TARGET_LIVE_P50_MS)}]", flush=True)
    figures["live_ms"] = {"p50": p50, "p99": p99, "max": max(delays), "n": len(delays)}
    return figures


def main() -> None:
    args = options()
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"{CHROMIUM} is missing: run scripts/setup-infra-browser.sh")
    if not (ui_dist() / "index.html").is_file():
        raise SystemExit(f"the web UI is not built ({ui_dist()}): run `make ui`")
    check_docker()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with workdir("ui", args.keep) as work, contextlib.ExitStack() as stack:
        figures = bench(args, work, stack)
    print(json.dumps({**figures, "load_average_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
