"""What the API's handlers share, as typed application state."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from services.api.auth import LoginLimiter, Tokens, Users
from services.api.live import LiveRuns
from services.api.readmodel import RunsReadModel
from shared.collector import Collector, StorageUse
from shared.events import run_stream
from shared.ports.artifacts import ArtifactStore
from shared.ports.coordination import Coordinator
from shared.ports.eventstore import EventStore
from shared.projections.runs import RunView, fold
from shared.secrets import SecretStore

__all__ = ["CONTEXT", "UI_DIST", "ApiContext"]

# The web UI as `make ui` builds it (services/api/web: Vue + Vite), shipped in the package.
UI_DIST = Path(__file__).resolve().parent / "web" / "dist"


@dataclass
class ApiContext:
    store: EventStore
    readmodel: RunsReadModel
    public_read: bool = False
    max_body: int = 25 * 1024 * 1024
    live: LiveRuns | None = None  # what push streams are fed by (none: they answer 503)
    secrets: SecretStore | None = None  # opened with its key at start (none: 503)
    ui_dist: Path = UI_DIST  # the built web UI served at / (missing: / answers 503)
    # the event manager's per-run limit (CYCLONE_MAX_PARALLEL_JOBS), to say why a job
    # waits (0: not known)
    max_parallel_jobs: int = 0
    artifacts: ArtifactStore | None = None  # artifacts, caches, test results (none: 503)
    # retention (services/api/gc.py): the collector POST /api/v1/gc runs (none: 503), and
    # the storage figures /metrics shows (none: not shown)
    gc: Collector | None = None
    storage: StorageUse | None = None
    # where the live workers are registered, to say which labels a queued job waits for
    # (none: a queued job just waits for a worker)
    coord: Coordinator | None = None

    # who makes requests: read from the store (so every replica sees each change)
    tokens: Tokens = field(init=False)
    users: Users = field(init=False)
    # failed logins: a few per user (guessing one's password), more per address (many
    # users behind one NAT)
    user_logins: LoginLimiter = field(init=False, default_factory=lambda: LoginLimiter(5))
    address_logins: LoginLimiter = field(init=False, default_factory=lambda: LoginLimiter(20))

    def __post_init__(self) -> None:
        self.tokens = Tokens(self.store)
        self.users = Users(self.store)

    async def find_run(self, run_id: str) -> RunView | None:
        """The run's view as its stream has it now: the read model's, with the events it
        has not applied yet folded on. The read model follows the bus and may be a moment
        behind (another replica applies the events; the run was just requested): a client
        that has just seen the run end on an event or log stream must not read an older
        state here."""
        kept = await self.readmodel.get(run_id)
        newer = await self.store.read(run_stream(run_id), kept.last_seq + 1 if kept else 1)
        return fold(newer, kept) if newer else kept


CONTEXT = web.AppKey("cyclone", ApiContext)
