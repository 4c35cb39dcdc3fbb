"""Git checkout for server-mode runs: resolve a ref to a commit, read the pipeline file
there (and the files it includes: ``pinned``, ``read_file``), export the commit's tree
into a directory or stream it as a tar archive.

``GitCheckout`` keeps one bare mirror per repository URL under ``cache_dir`` (directory
name = sha256 of the URL) and fetches into it shallowly (depth 1), so a repository is
cloned once per worker and later runs fetch only what changed. Any URL ``git clone``
takes works (https, ssh, git://, file://, a local path).

Contract:

* Every failure -- git missing, an unreachable or private repository, an unknown ref or
  commit, a missing pipeline file, a git command running past ``timeout`` s -- raises
  ``CheckoutError`` whose message says what failed and ends with git's own stderr.
  Credentials in URLs (``user:password@``) are masked in every message and log line.
* Git never prompts (``GIT_TERMINAL_PROMPT=0``, no terminal): a private repository
  fails instead of hanging. A git command past its timeout, or whose caller is
  cancelled, is killed with its children (ssh, remote helpers).
* Concurrency: only fetches into a mirror are serialised, by a lock shared by every
  ``GitCheckout`` of the process with the same ``cache_dir``: concurrent fetches into
  one repository conflict (``shallow.lock``, ref locks). Everything else runs in
  parallel, so a burst of runs of one repository costs about one run: ``ls-remote``
  talks to the remote only; a commit already in the mirror (``ls-remote`` gave its SHA,
  or it was asked for by SHA) is used with no fetch and no lock; and reads --
  ``rev-parse``, the pipeline file, ``export``, ``archive`` -- look objects up by SHA,
  which git allows during a fetch: a fetch stores what it receives as one pack that
  appears whole (``fetch.unpackLimit=1``), before it updates any ref, so a commit seen
  in the mirror has its whole tree there. A run that finds its commit missing waits for
  the lock, then looks again before fetching: N runs of one new commit fetch it once.
  Different repositories never wait for each other. Instances are cheap: make one per
  run so that ``on_line`` goes to that run's log. (Processes sharing a ``cache_dir``
  are not serialised; give each worker process its own.)
* ``on_line`` gets each line git prints while talking to the remote (the command first,
  then git's progress, one line per phase), credentials masked.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import hashlib
import os
import re
import shutil
import signal
import tempfile
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from shared.errors import ExecutorError
from shared.tasks import cancel_and_wait

__all__ = ["DEFAULT_PIPELINE", "LEGACY_PIPELINE", "CheckoutError", "GitCheckout",
           "Resolved", "mask_credentials"]

DEFAULT_PIPELINE = ".cyclone.yml"
LEGACY_PIPELINE = "caicloud.yml"  # read when the default file is absent

OnLine = Callable[[str], Awaitable[None]]

# Variables that would point git at another repository (they are set inside git hooks).
_REPO_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
              "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE")
# Settings every git command runs with (each matters to one command only):
_CONFIG = (
    # A fetch keeps what it receives as one pack, visible only once complete, instead
    # of loose objects written one by one (a commit before its tree): a read during a
    # fetch, or after a killed one, never finds a commit whose tree is incomplete.
    "-c", "fetch.unpackLimit=1",
    # git archive's modes: 0644, and 0755 for executables and directories, as a checkout
    # under the usual umask (git's default, 0002, makes everything group-writable).
    "-c", "tar.umask=0022",
)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_HEX = re.compile(r"[0-9a-fA-F]{4,64}")
_FULL_SHA = re.compile(r"[0-9a-fA-F]{40}")
_OBJECT_ID = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")
_KINDS = frozenset({b"commit", b"tree", b"blob", b"tag"})
_TAIL_LINES = 20  # lines of git's stderr kept for an error message
_CHUNK = 256 * 1024  # bytes per chunk of an archive stream

# One lock per mirror directory, shared by every GitCheckout of the process; an entry
# lives while some coroutine holds or awaits it.
_LOCKS: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def mask_credentials(text: str, url: str = "") -> str:
    """``text`` with the userinfo of any ``scheme://user:pw@host`` URL replaced by ``***``.

    With ``url``, its userinfo is also masked where git prints it without the scheme
    (``unable to look up user:pw@host``).
    """
    if "://" in url:
        netloc = url.split("://", 1)[1].split("/", 1)[0]
        userinfo = netloc.rsplit("@", 1)[0] if "@" in netloc else ""
        for secret in filter(None, {userinfo, unquote(userinfo)}):
            text = text.replace(secret + "@", "***@")
    return _URL_USERINFO.sub("***@", text)


class CheckoutError(ExecutorError):
    """The source could not be checked out; the message ends with git's stderr."""


@dataclass(frozen=True)
class Resolved:
    """What a run's ref resolved to, and its pipeline file read at that commit."""

    commit: str  # full SHA
    branch: str  # branch name; "" for a tag or a bare commit
    pipeline_file: str  # the file actually read
    pipeline: str  # its content


@dataclass(frozen=True)
class _Object:
    """An object of a mirror, as ``git cat-file --batch`` gives it."""

    sha: str
    kind: str  # commit, tree, blob, tag
    content: bytes


@dataclass(frozen=True)
class _Done:
    returncode: int
    stdout: bytes
    stderr: str  # last lines, masked


class GitCheckout:
    """Resolves and exports commits of Git repositories through local bare mirrors."""

    def __init__(self, cache_dir: Path, on_line: OnLine | None = None,
                 timeout: float = 300.0) -> None:
        self.cache_dir = cache_dir
        self.on_line = on_line
        self.timeout = timeout  # seconds, per git command

    def mirror_path(self, url: str) -> Path:
        """The bare mirror of ``url`` (which may not exist yet)."""
        return self.cache_dir / hashlib.sha256(url.encode()).hexdigest()

    async def resolve(self, url: str, ref: str = "", commit: str = "",
                      pipeline_file: str = DEFAULT_PIPELINE, via: str = "") -> Resolved:
        """Fetch and resolve the run's source, and read its pipeline file.

        ``commit`` given: that commit (abbreviations allowed); ``branch`` is then ``ref``
        (without ``refs/heads/``) taken on trust, since the branch may have moved since.
        Else ``ref`` (a branch or tag name -- a branch wins -- or a full ``refs/...``
        name). Else the remote's default branch. ``.cyclone.yml`` falls back to
        ``caicloud.yml`` when absent. ``via``: a ref that holds ``commit`` (a pull
        request's ``refs/pull/N/head``), fetched for it first.
        """
        mirror = self.mirror_path(url)
        if commit:
            name = _commit_id(commit)
            branch = _branch_of(ref) if ref.startswith("refs/") or not ref else ref
        else:
            remote_ref, branch, name = await self._remote_ref(url, ref)
        names = _pipeline_names(pipeline_file)
        # Mostly the commit is in the mirror already (an earlier run of it, or of a later
        # one): it and its pipeline file are read by one git process.
        found = await self._look_up(mirror, url, [
            f"{name}^{{commit}}", *(f"{name}:{n.removeprefix('./')}" for n in names)])
        if found[0] is not None:
            sha = found[0].sha
            return Resolved(sha, branch, *_pipeline_in(names, found[1:], sha, url))
        if commit:
            sha = await self._commit(mirror, url, commit, via)
        else:  # the ref may have moved on since it was listed: fetch the ref itself
            sha = await self._ensure(mirror, url, name,
                                     lambda: self._fetch_ref(mirror, url, remote_ref))
        pipeline_file, content = await self._read_pipeline(mirror, url, sha, pipeline_file)
        return Resolved(commit=sha, branch=branch, pipeline_file=pipeline_file,
                        pipeline=content)

    async def pinned(self, url: str, ref: str) -> str:
        """The full SHA of the commit that ``ref`` -- a tag (``refs/tags/`` optional) or a
        full 40-hex commit id -- names in ``url``, fetched into the mirror when missing.
        A branch is refused: it moves, so what it names is not reproducible."""
        mirror = self.mirror_path(url)
        if _FULL_SHA.fullmatch(ref):
            return await self._commit(mirror, url, ref)
        name = ref.removeprefix("refs/tags/")
        tag, branch = f"refs/tags/{name}", f"refs/heads/{name}"
        done = await self._network(url, None, "ls-remote", "--", url, tag, branch)
        if done.returncode != 0:
            raise self._error(f"cannot list the refs of {url}", url, done)
        listed = done.stdout.decode(errors="replace").splitlines()
        shas = {full: sha for sha, full in (line.split("\t", 1) for line in listed
                                            if "\t" in line)}
        if tag in shas:
            return await self._ensure(mirror, url, shas[tag],
                                      lambda: self._fetch_ref(mirror, url, tag))
        if branch in shas:
            raise CheckoutError(f"{name!r} is a branch, which moves, not a tag: name a tag or "
                                "a full 40-hex commit id")
        hint = " (a commit is named by its full 40-hex id)" if _HEX.fullmatch(name) else ""
        raise CheckoutError(mask_credentials(f"no tag {name!r} in {url}{hint}", url))

    async def read_file(self, url: str, commit: str, path: str) -> str:
        """The content of ``path`` at ``commit``, a full SHA in the mirror of ``url``
        (``resolve`` or ``pinned`` fetched it)."""
        content = await self._blob(self.mirror_path(url), url, commit, path)
        if content is None:
            raise CheckoutError(mask_credentials(f"no file {path} at {commit} in {url}", url))
        return content

    async def export(self, url: str, commit: str, dest: Path, via: str = "") -> None:
        """Write the tree of ``commit`` into ``dest`` (created; files there are
        overwritten), keeping executable bits; fetches the commit when missing (through
        ``via`` first, as ``resolve``)."""
        mirror = self.mirror_path(url)
        sha = await self._commit(mirror, url, commit, via)
        await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
        # A private index file, so concurrent exports of one mirror do not share one.
        with tempfile.TemporaryDirectory(prefix="index-", dir=self.cache_dir) as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": str(dest)}
            for args in (("read-tree", sha), ("checkout-index", "--all", "--force")):
                done = await self._git(*args, url=url, git_dir=mirror, env=env)
                if done.returncode != 0:
                    raise self._error(f"cannot export {sha} of {url} into {dest}", url, done)

    async def archive(self, url: str, commit: str,
                      via: str = "") -> AsyncGenerator[bytes, None]:
        """The tree of ``commit`` as an uncompressed tar stream, in chunks of 256 KiB
        (the last one shorter); fetches the commit when missing (through ``via`` first,
        as ``resolve``).

        An async generator, streamed by ``git archive`` straight from the mirror: no
        scratch directory. Members keep executable bits (mode 0755, else 0644) and
        symlinks. A git failure raises ``CheckoutError`` from the iteration, after the
        last chunk. ``timeout`` bounds each wait for git's output, not the consumer's
        pace. Close the generator when stopping early -- ``aclosing`` does it, and
        cancellation does it -- so that git is killed at once rather than when the
        generator is collected::

            async with contextlib.aclosing(checkout.archive(url, sha)) as tar:
                await container.put_archive("/workspace", tar)
        """
        mirror = self.mirror_path(url)
        if _FULL_SHA.fullmatch(commit):
            # Mostly the commit is in the mirror already (its run's checkout fetched it):
            # it is archived straight away, one git process. Only when git fails having
            # sent nothing (no such commit yet, no mirror) is it looked up (and fetched).
            sent = False
            try:
                async with contextlib.aclosing(self._archive(mirror, url, commit)) as tar:
                    async for chunk in tar:
                        sent = True
                        yield chunk
                return
            except CheckoutError:
                if sent:
                    raise
        sha = await self._commit(mirror, url, commit, via)
        async with contextlib.aclosing(self._archive(mirror, url, sha)) as tar:
            async for chunk in tar:
                yield chunk

    async def _archive(self, mirror: Path, url: str, sha: str) -> AsyncGenerator[bytes, None]:
        """``archive`` of ``sha``, which is in the mirror."""
        tail: list[str] = []
        args = ("archive", "--format=tar", sha)
        async with self._process(args, mirror, limit=_CHUNK) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            stderr_lines = self._read_lines(proc.stderr, url, tail, echo=False)
            async with _background(stderr_lines) as stderr:
                while chunk := await self._chunk(proc.stdout, url):
                    yield chunk
                async with self._deadline("archive", url):
                    returncode = await proc.wait()
                    await stderr
        if returncode != 0:
            raise self._error(f"cannot archive {sha} of {url}", url,
                              _Done(returncode, b"", "\n".join(tail[-_TAIL_LINES:])))

    # -- steps ---------------------------------------------------------------------------

    def _lock(self, mirror: Path) -> asyncio.Lock:
        key = os.path.abspath(mirror)
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = asyncio.Lock()
        return lock

    async def _ensure(self, mirror: Path, url: str, name: str,
                      fetch: Callable[[], Awaitable[str]]) -> str:
        """The full SHA of the commit ``name`` names in ``mirror`` when it is there, with
        no lock; else that of ``fetch()``, run under the mirror's lock (the one step
        that takes it)."""
        await self._init_mirror(mirror, url)
        sha = await self._rev_parse(mirror, url, name)
        if sha is not None:
            return sha
        async with self._lock(mirror):
            # Another run may have fetched it while this one waited for the lock.
            sha = await self._rev_parse(mirror, url, name)
            return sha if sha is not None else await fetch()

    async def _commit(self, mirror: Path, url: str, commit: str, via: str = "") -> str:
        """The full SHA of ``commit``, fetched into ``mirror`` unless already there:
        through the ref ``via`` when given (a fork's commit is reachable from no branch,
        and some servers refuse a fetch by SHA), else (or when it has moved on) by SHA."""
        _commit_id(commit)

        async def fetch() -> str:
            if via:
                done = await self._network(url, mirror, "fetch", "--depth", "1",
                                           *_FETCH_FLAGS, "--", url, f"+{via}:{via}")
                sha = await self._rev_parse(mirror, url, commit) if done.returncode == 0 \
                    else None
                if sha is not None:
                    return sha
            return await self._fetch_commit(mirror, url, commit)

        return await self._ensure(mirror, url, commit, fetch)

    async def _init_mirror(self, mirror: Path, url: str) -> None:
        # No lock needed: the mirror is built aside and renamed into place, and a
        # concurrent builder that loses the race drops its copy.
        fresh = await asyncio.to_thread(_aside, mirror)
        if fresh is None:
            return
        done = await self._git("init", "--quiet", "--bare", str(fresh), url=url)
        await asyncio.to_thread(_place, fresh, mirror if done.returncode == 0 else None)
        if done.returncode != 0:
            raise self._error(f"cannot create the mirror of {url} in {mirror}", url, done)

    async def _remote_ref(self, url: str, ref: str) -> tuple[str, str, str]:
        """The remote's full name for ``ref`` (default branch when empty), its branch,
        and the SHA the remote lists for it."""
        if ref:
            wanted = [ref] if ref.startswith("refs/") else [f"refs/heads/{ref}",
                                                              f"refs/tags/{ref}"]
            done = await self._network(url, None, "ls-remote", "--", url, *wanted)
        else:
            done = await self._network(url, None, "ls-remote", "--symref", "--", url, "HEAD")
        if done.returncode != 0:
            raise self._error(f"cannot list the refs of {url}", url, done)
        listed = [line.split("\t", 1) for line in done.stdout.decode(errors="replace")
                  .splitlines() if "\t" in line]
        shas = {name: sha for sha, name in listed if not sha.startswith("ref: ")}
        if not ref:
            symref = [sha[len("ref: "):] for sha, name in listed
                      if name == "HEAD" and sha.startswith("ref: ")]
            if symref and "HEAD" in shas:
                return symref[0], _branch_of(symref[0]), shas["HEAD"]
            if "HEAD" in shas:  # detached HEAD on the server
                return "HEAD", "", shas["HEAD"]
            raise CheckoutError(mask_credentials(f"{url} has no default branch (empty?)", url))
        for name in wanted:
            if name in shas:
                return name, _branch_of(name), shas[name]
        raise CheckoutError(mask_credentials(f"no branch or tag {ref!r} in {url}", url))

    async def _fetch_ref(self, mirror: Path, url: str, remote_ref: str) -> str:
        """Fetch ``remote_ref`` into the mirror's ref of that name; its commit's SHA.
        Called under the mirror's lock, so no other fetch moves the ref meanwhile."""
        local = remote_ref if remote_ref.startswith("refs/") else "refs/cyclone/HEAD"
        done = await self._network(url, mirror, "fetch", "--depth", "1", *_FETCH_FLAGS,
                                   "--", url, f"+{remote_ref}:{local}")
        if done.returncode != 0:
            raise self._error(f"cannot fetch {remote_ref} from {url}", url, done)
        sha = await self._rev_parse(mirror, url, local)
        if sha is None:
            raise CheckoutError(mask_credentials(f"{remote_ref} of {url} is not a commit", url))
        return sha

    async def _fetch_commit(self, mirror: Path, url: str, commit: str) -> str:
        """Fetch ``commit`` (missing from the mirror) into it; its full SHA."""
        shallow = await self._network(url, mirror, "fetch", "--depth", "1", *_FETCH_FLAGS,
                                      "--", url, commit)
        if shallow.returncode != 0:
            # The server refuses to send a commit by SHA (protocol v0 without
            # uploadpack.allowReachableSHA1InWant), or the SHA is abbreviated or
            # unknown: fetch every branch and tag, whole history, and look there.
            unshallow = ["--unshallow"] if (mirror / "shallow").exists() else []
            full = await self._network(url, mirror, "fetch", *unshallow,
                                       *_FETCH_FLAGS, "--", url, "+refs/heads/*:refs/heads/*",
                                       "+refs/tags/*:refs/tags/*")
            if full.returncode != 0:
                raise self._error(f"cannot fetch commit {commit} from {url}", url, full)
        sha = await self._rev_parse(mirror, url, commit)
        if sha is None:
            raise CheckoutError(mask_credentials(f"no commit {commit} in {url}", url))
        return sha

    async def _rev_parse(self, mirror: Path, url: str, name: str) -> str | None:
        done = await self._git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}",
                               url=url, git_dir=mirror)
        return done.stdout.decode().strip() if done.returncode == 0 else None

    async def _read_pipeline(self, mirror: Path, url: str, sha: str,
                             pipeline_file: str) -> tuple[str, str]:
        names = _pipeline_names(pipeline_file)
        found = await self._look_up(mirror, url, [f"{sha}:{n.removeprefix('./')}" for n in names])
        return _pipeline_in(names, found, sha, url)

    async def _look_up(self, mirror: Path, url: str,
                       names: Sequence[str]) -> list[_Object | None]:
        """For each object name (``<commit>^{commit}``, ``<commit>:<path>``): the object,
        None when the mirror has no such object (or no mirror is there yet), from one
        ``git cat-file --batch``."""
        if any("\n" in name for name in names):
            return [None] * len(names)  # cannot be asked; no file has such a name either
        done = await self._git("cat-file", "--batch", url=url, git_dir=mirror,
                               stdin="".join(f"{name}\n" for name in names).encode())
        return _batch_answers(done.stdout, len(names)) if done.returncode == 0 \
            else [None] * len(names)

    async def _blob(self, mirror: Path, url: str, sha: str, path: str) -> str | None:
        """The file ``path`` of commit ``sha`` as text; None when there is no such file."""
        done = await self._git("cat-file", "blob", f"{sha}:{path}", url=url, git_dir=mirror)
        return done.stdout.decode(errors="replace") if done.returncode == 0 else None

    # -- running git ---------------------------------------------------------------------

    def _error(self, what: str, url: str, done: _Done) -> CheckoutError:
        detail = done.stderr or f"git exited with status {done.returncode}"
        return CheckoutError(mask_credentials(f"{what}: {detail}", url))

    async def _network(self, url: str, git_dir: Path | None, *args: str) -> _Done:
        """A git command that talks to the remote: shown on ``on_line``, with progress."""
        await self._emit(url, "$ git " + " ".join(a for a in args if a != "--"))
        return await self._git(*args, url=url, git_dir=git_dir, echo=True)

    async def _emit(self, url: str, line: str) -> None:
        if self.on_line is not None:
            await self.on_line(mask_credentials(line, url))

    async def _git(self, *args: str, url: str, git_dir: Path | None = None,
                   echo: bool = False, env: dict[str, str] | None = None,
                   stdin: bytes | None = None) -> _Done:
        """Run ``git <args>`` (no shell) in ``git_dir`` under the timeout, ``stdin`` its
        input; returns its status, stdout and stderr's last lines. A timeout is a
        CheckoutError."""
        tail: list[str] = []
        async with (self._process(args, git_dir, env, stdin=stdin is not None) as proc,
                    self._deadline(args[0], url)):
            assert proc.stdout is not None and proc.stderr is not None
            if proc.stdin is not None and stdin is not None:
                proc.stdin.write(stdin)  # a few names: the pipe takes them at once
                proc.stdin.close()
            stdout, _ = await asyncio.gather(
                proc.stdout.read(), self._read_lines(proc.stderr, url, tail, echo))
            returncode = await proc.wait()
        return _Done(returncode, stdout, "\n".join(tail[-_TAIL_LINES:]))

    @contextlib.asynccontextmanager
    async def _process(self, args: Sequence[str], git_dir: Path | None,
                       env: dict[str, str] | None = None, limit: int = 2 ** 16,
                       stdin: bool = False) -> AsyncIterator[asyncio.subprocess.Process]:
        """``git <args>`` running with its output piped (``limit``: bytes buffered);
        on leaving the block, killed with its children unless it has exited, and reaped."""
        full_env = {k: v for k, v in os.environ.items() if k not in _REPO_VARS}
        full_env.update({"GIT_TERMINAL_PROMPT": "0", **(env or {})})
        if git_dir is not None:
            full_env["GIT_DIR"] = str(git_dir)
        try:
            proc = await asyncio.create_subprocess_exec(
                "git", *_CONFIG, *args, env=full_env,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                limit=limit,
                start_new_session=True)  # no terminal to prompt on; killpg reaches children
        except OSError as exc:
            raise CheckoutError(f"cannot run git: {exc}") from exc
        try:
            yield proc
        finally:
            if proc.returncode is None:
                _kill_group(proc.pid)
            # Not wait(): asyncio reaps the process only once both pipes reach their end,
            # which a pipe paused on unread output (a consumer that stopped early) never
            # does. communicate() reads what is left, at most a pipe's worth once git is
            # dead, and closes the pipes.
            await proc.communicate()

    @contextlib.asynccontextmanager
    async def _deadline(self, command: str, url: str) -> AsyncIterator[None]:
        """The block within ``timeout``, else a CheckoutError naming ``command``."""
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except TimeoutError as exc:
            raise CheckoutError(mask_credentials(
                f"git {command} for {url} timed out after {self.timeout:g}s", url)) from exc

    async def _chunk(self, stream: asyncio.StreamReader, url: str) -> bytes:
        """The next ``_CHUNK`` bytes of ``stream`` (fewer at its end; none past it)."""
        async with self._deadline("archive", url):
            try:
                return await stream.readexactly(_CHUNK)
            except asyncio.IncompleteReadError as exc:
                return exc.partial

    async def _read_lines(self, stream: asyncio.StreamReader, url: str, tail: list[str],
                          echo: bool) -> None:
        """Collect git's stderr lines; a progress meter rewrites its line with ``\\r``,
        and only its final state (``..., done.``) is kept."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while chunk := await stream.read(4096):
            *lines, pending = (pending + decoder.decode(chunk)).split("\n")
            pending = pending.rsplit("\r", 1)[-1]  # drop overwritten meter states
            for raw in lines:
                line = mask_credentials(raw.rstrip("\r").rsplit("\r", 1)[-1].rstrip(), url)
                if line:
                    tail.append(line)
                    del tail[:-_TAIL_LINES]
                    if echo:
                        await self._emit(url, line)
        last = mask_credentials(pending.strip(), url)
        if last:
            tail.append(last)
            if echo:
                await self._emit(url, last)


_FETCH_FLAGS = ("--no-tags", "--progress", "--update-head-ok")


@contextlib.asynccontextmanager
async def _background(work: Coroutine[Any, Any, None],
                      ) -> AsyncIterator[asyncio.Task[None]]:
    """``work`` running as a task during the block; cancelled and awaited on leaving it
    unfinished (the caller stopped early), so no task outlives the block."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        await cancel_and_wait(task)


def _commit_id(commit: str) -> str:
    """``commit``, if it can name a commit (hex, abbreviations allowed); else refused."""
    if not _HEX.fullmatch(commit):
        raise CheckoutError(f"{commit!r} is not a commit id")
    return commit


def _pipeline_names(pipeline_file: str) -> list[str]:
    """The files to read a run's pipeline from, in order."""
    names = [pipeline_file]
    if pipeline_file == DEFAULT_PIPELINE:
        names.append(LEGACY_PIPELINE)
    return names


def _pipeline_in(names: list[str], found: Sequence[_Object | None], sha: str,
                 url: str) -> tuple[str, str]:
    """The first of ``names`` that is a file (``found``: what the commit has at each), and
    its text."""
    for name, obj in zip(names, found, strict=True):
        if obj is not None and obj.kind == "blob":
            return name, obj.content.decode(errors="replace")
    wanted = names[0] if len(names) == 1 else f"{names[0]} (or {names[1]})"
    raise CheckoutError(mask_credentials(f"no {wanted} at {sha} in {url}", url))


def _batch_answers(out: bytes, count: int) -> list[_Object | None]:
    """``count`` answers of ``git cat-file --batch``: ``<sha> <type> <size>``, the
    content and a newline for an object; ``<name> missing`` (or ``ambiguous``) else."""
    answers: list[_Object | None] = []
    at = 0
    for _ in range(count):
        end = out.find(b"\n", at)
        if end < 0:
            return answers + [None] * (count - len(answers))
        header = out[at:end].split(b" ")
        at = end + 1
        if (len(header) == 3 and _OBJECT_ID.fullmatch(header[0])
                and header[1] in _KINDS and header[2].isdigit()):
            size = int(header[2])
            answers.append(_Object(header[0].decode(), header[1].decode(), out[at:at + size]))
            at += size + 1
        else:
            answers.append(None)
    return answers


def _branch_of(ref: str) -> str:
    return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else ""


def _aside(mirror: Path) -> Path | None:
    """None when ``mirror`` exists, else a new empty directory beside it to build it in
    (renamed into place when complete, so no process sees a half-made mirror)."""
    if mirror.exists():
        return None
    mirror.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".init-", dir=mirror.parent))


def _place(fresh: Path, mirror: Path | None) -> None:
    """Rename ``fresh`` to ``mirror``; remove it instead when there is no ``mirror`` to
    make or another process made it first."""
    if mirror is not None:
        try:
            fresh.rename(mirror)
            return
        except OSError:
            pass  # made by another process meanwhile: use that one
    shutil.rmtree(fresh, ignore_errors=True)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone

