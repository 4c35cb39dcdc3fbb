"""Plain Git: a post-receive hook that tells Cyclone about every pushed branch and tag.

``install_hook`` writes ``hooks/post-receive`` into a bare repository. The hook is a
POSIX sh script that needs only ``git`` and ``python3`` (both on a stock Debian Git
server; Cyclone need not be installed there). For each ref a push updated it POSTs the
generic payload (``services/api/hooks/generic.py`` documents it) to Cyclone's generic
webhook endpoint, signed with ``X-Cyclone-Signature`` and carrying a fresh
``X-Cyclone-Delivery``. The endpoint URL and the secret live in
``<repo>/cyclone-hook.json`` (mode 0600), so the secret never appears on a command line.

The hook never fails or holds up a push for long: when Cyclone is down, slow or says
no, the pusher sees a ``cyclone: warning: ...`` line and the push stands; all refs of
one push share one time budget (``timeout``, 5 s by default).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from shared.errors import CycloneError

__all__ = ["CONFIG_NAME", "GitHookError", "install_hook"]

CONFIG_NAME = "cyclone-hook.json"
_MARKER = "# cyclone post-receive hook"
# Variables that would point git at another repository than the one named.
_REPO_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
              "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_COMMON_DIR")


class GitHookError(CycloneError):
    """The hook cannot be installed there; the message says why and what to do."""


def install_hook(repo: Path, url: str, secret: str, *, repo_url: str | None = None,
                 timeout: float = 5.0, force: bool = False) -> Path:
    """Install Cyclone's post-receive hook into the bare Git repository REPO.

    Every later push to REPO notifies URL -- Cyclone's generic webhook endpoint for the
    project, ``https://<cyclone>/api/v1/hooks/generic/<project>`` -- with one signed
    delivery per pushed branch or tag (new, updated or deleted), naming the commit, its
    author and message, and the paths changed since the ref's previous commit.

    SECRET is the project's webhook secret; it is stored in ``REPO/cyclone-hook.json``,
    readable by its owner only, so install as the user that receives pushes. REPO_URL is
    the clone URL Cyclone should fetch from (default: REPO's ``file://`` URL, right when
    Cyclone runs on the Git server). TIMEOUT bounds how long a push may wait for Cyclone.
    An existing post-receive hook not written by Cyclone is kept unless FORCE. Running
    it again updates URL, secret and timeout.

    Returns the path of the hook written. Raises ``GitHookError`` when REPO is not a
    bare repository, or an argument is invalid.
    """
    if not url.startswith(("http://", "https://")):
        raise GitHookError(f"the webhook URL must start with http:// or https://: {url!r}")
    if not secret:
        raise GitHookError("the webhook secret is empty: use the project's webhook secret")
    if not 0 < timeout <= 60:
        raise GitHookError(f"the timeout must be between 0 and 60 seconds, not {timeout}")
    git_dir, hooks = _bare_repository(repo)
    hook = hooks / "post-receive"
    if hook.exists() and not force and _MARKER not in hook.read_text(errors="replace"):
        raise GitHookError(
            f"{hook} already exists and was not written by Cyclone: replace it with "
            "--force, or keep it and add Cyclone's hook yourself")
    config = {"url": url, "secret": secret, "timeout": timeout,
              "repo_url": repo_url if repo_url is not None else git_dir.as_uri()}
    _write(git_dir / CONFIG_NAME, json.dumps(config, indent=2) + "\n", 0o600)
    hooks.mkdir(parents=True, exist_ok=True)
    _write(hook, _SCRIPT, 0o755)
    return hook


def _bare_repository(repo: Path) -> tuple[Path, Path]:
    """REPO's git dir and hooks dir (``core.hooksPath`` honoured); GitHookError unless
    REPO is itself a bare repository."""
    if not repo.is_dir():
        raise GitHookError(f"{repo} is not a directory")
    env = {k: v for k, v in os.environ.items() if k not in _REPO_VARS}
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--is-bare-repository",
             "--absolute-git-dir", "--git-path", "hooks"],
            env=env, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError as exc:
        raise GitHookError("git is not installed (no 'git' on PATH)") from exc
    except subprocess.TimeoutExpired as exc:
        raise GitHookError(f"git did not answer about {repo} within 30 s") from exc
    if done.returncode != 0:
        raise GitHookError(f"{repo} is not a Git repository: {done.stderr.strip()}")
    bare, git_dir, hooks = done.stdout.splitlines()[:3]
    if bare != "true":
        raise GitHookError(
            f"{repo} is not a bare repository (it has a work tree): install the hook in "
            "the repository people push to, e.g. /srv/git/project.git")
    if Path(git_dir).resolve() != repo.resolve():
        raise GitHookError(f"{repo} is inside the repository {git_dir}, not a repository "
                           "itself: name the repository's directory")
    return Path(git_dir), repo / hooks  # / keeps an absolute core.hooksPath as it is


def _write(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` atomically with ``text``; the file never exists with wider
    permissions than ``mode``, not even for a moment."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, mode)  # the umask may have narrowed the executable bits
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# The hook. Python 3.5+ (Debian 9 and later); keep it free of newer syntax.
_NOTIFY = r'''
import hashlib, hmac, json, subprocess, sys, time, uuid
import urllib.error, urllib.request


def warn(text):
    sys.stderr.write("cyclone: warning: " + text + "\n")


def git(*args):
    done = subprocess.run(("git",) + args, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, check=True)
    return done.stdout.decode("utf-8", "replace")


def zero(sha):
    return set(sha) == {"0"}


def payload(old, new, ref, repo_url):
    if ref.startswith("refs/heads/"):
        event = "push"
    elif ref.startswith("refs/tags/"):
        event = "tag"
    else:
        return None  # notes, review refs and the like are not built
    body = {"event": event, "ref": ref, "before": old, "after": new}
    if repo_url:
        body["repository"] = {"url": repo_url}
    if not zero(new):
        commit = git("rev-parse", "--verify", "-q", new + "^{commit}").strip()
        name, email, message = git("log", "-1", "--format=%an%x00%ae%x00%B",
                                   commit).split("\0", 2)
        body["head_commit"] = {"id": commit, "message": message.rstrip("\n"),
                               "author": {"name": name, "email": email}}
        if event == "push" and not zero(old):  # a new branch has no "before" to diff
            try:
                paths = git("diff", "--name-only", "--no-renames", "-z", old, new)
            except subprocess.CalledProcessError:
                pass  # "before" is gone (pruned): the paths stay unknown
            else:
                body["changed_paths"] = [path for path in paths.split("\0") if path]
    return body


def post(url, secret, body, timeout):
    data = json.dumps(body).encode()
    digest = hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "cyclone-post-receive/1",
        "X-Cyclone-Signature": "sha256=" + digest,
        "X-Cyclone-Delivery": uuid.uuid4().hex})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(65536)
    except urllib.error.HTTPError as error:
        return error.code, error.read(65536)


def answer(raw):
    """(the reason a delivery was ignored, the error detail) of Cyclone's JSON answer."""
    try:
        data = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return "", ""
    return str(data.get("ignored") or ""), str(data.get("detail") or "")


def main(path):
    try:
        with open(path) as file:
            config = json.load(file)
        url, secret = config["url"], config["secret"]
        budget = float(config.get("timeout", 5))
    except (OSError, ValueError, KeyError, TypeError) as error:
        warn("cannot read " + path + " (" + str(error) + "); Cyclone was not notified")
        return
    deadline = time.monotonic() + budget
    updates = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
    for index, update in enumerate(updates):
        if len(update) != 3:
            continue
        old, new, ref = update
        try:
            body = payload(old, new, ref, config.get("repo_url", ""))
        except (OSError, subprocess.CalledProcessError, ValueError):
            warn(ref + ": git could not describe " + new + "; Cyclone was not notified")
            continue
        if body is None:
            continue
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise OSError("out of time")
            status, raw = post(url, secret, body, left)
        except (OSError, ValueError) as error:  # refused, unreachable, timed out
            reason = getattr(error, "reason", None) or error
            warn("Cyclone at " + url + " did not answer (" + str(reason) + "); "
                 + str(len(updates) - index) + " ref(s) not notified. The push is done.")
            return
        ignored, detail = answer(raw)
        if 200 <= status < 300:
            said = "not built: " + ignored if ignored else "notified"
            sys.stderr.write("cyclone: " + ref + ": " + said + "\n")
        else:
            warn(ref + ": Cyclone answered HTTP " + str(status)
                 + (": " + detail if detail else "") + ". The push is done.")


try:
    main(sys.argv[1])
except Exception as error:  # a push must never fail because of this hook
    warn("notification failed: " + repr(error))
'''

_SCRIPT = f"""#!/bin/sh
{_MARKER}: notifies Cyclone of every pushed branch and tag.
# Written by `cyclone hook install`; URL and secret are in {CONFIG_NAME} in the
# repository (mode 0600). Needs git and python3. Never fails a push.
config="${{GIT_DIR:-.}}/{CONFIG_NAME}"
if ! command -v python3 >/dev/null 2>&1; then
    echo "cyclone: warning: python3 is not installed; Cyclone was not notified" >&2
    exit 0
fi
notify=$(cat <<'CYCLONE_NOTIFY_PY'
{_NOTIFY.strip()}
CYCLONE_NOTIFY_PY
)
python3 -c "$notify" "$config" || true
exit 0
"""
