"""What a pipeline file includes, fetched through this worker's Git mirrors.

``GitIncludes`` is the ``shared.pipeline.include.Fetch`` of a run: a file of the run's
own source is read at the run's commit from its repository (``own``; a ``cyclone run``
reads its directory instead, ``cyclone.includes``); another project's file at the
commit its ``ref`` names -- a tag or a full commit id, never a branch -- in that
project's repository, found by its registration (``registered_repos``). Each
(project, ref) is resolved once per instance: make one per run.

Every failure raises ``IncludeError`` saying what failed (git's stderr last,
credentials masked); ``shared.pipeline.include.resolve`` records it in place of the
file, and the run's planning reports it at the include entry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.workermanager.checkout import CheckoutError, GitCheckout
from shared.errors import IncludeError
from shared.pipeline.include import IncludedFile, Key
from shared.ports.eventstore import EventStore
from shared.projections.projects import fold_project, project_stream

__all__ = ["GitIncludes", "OwnSource", "RepoOf", "registered_repos"]

RepoOf = Callable[[str], Awaitable[str]]  # project -> its repository URL; else IncludeError


@dataclass(frozen=True)
class OwnSource:
    """The run's own repository and the commit its pipeline file was read at."""

    url: str
    commit: str


class GitIncludes:
    def __init__(self, checkout: GitCheckout, repo_of: RepoOf,
                 own: OwnSource | None = None) -> None:
        """``own``: None when the run's own files are not read here (``cyclone run``)."""
        self.checkout = checkout
        self.repo_of = repo_of
        self.own = own
        self._commits: dict[tuple[str, str], str] = {}  # (project, ref) -> commit

    async def __call__(self, key: Key) -> IncludedFile:
        project, ref, file = key
        try:
            if not project:
                if self.own is None:
                    raise IncludeError(f"no repository to read {file} from")
                content = await self.checkout.read_file(self.own.url, self.own.commit, file)
                return IncludedFile.read(key, self.own.commit, content)
            url = await self.repo_of(project)
            commit = await self._commit(project, url, ref)
            return IncludedFile.read(key, commit, await self.checkout.read_file(url, commit,
                                                                                file))
        except CheckoutError as exc:
            raise IncludeError(str(exc)) from exc

    async def _commit(self, project: str, url: str, ref: str) -> str:
        commit = self._commits.get((project, ref))
        if commit is None:
            try:
                commit = await self.checkout.pinned(url, ref)
            except CheckoutError as exc:
                raise IncludeError(f"project '{project}': {exc}") from exc
            self._commits[(project, ref)] = commit
        return commit


def registered_repos(store: EventStore) -> RepoOf:
    """The repository of a project registered in ``store`` (not deleted)."""

    async def repo_of(name: str) -> str:
        project = fold_project(await store.read(project_stream(name)))
        if project is None or project.deleted:
            raise IncludeError(f"no project '{name}'")
        if not project.repo:
            raise IncludeError(f"project '{name}' has no repository")
        return project.repo

    return repo_of
