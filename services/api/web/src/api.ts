// Every call the UI makes to the API, typed, in one place: a change of a shape is made
// here. Shapes follow services/api (openapi.py, the projections' to_json); fields marked
// optional are ones the server may not send (yet).

export type Role = 'viewer' | 'developer' | 'maintainer'
export type RunStatus =
  | 'requested' | 'running' | 'success' | 'failure' | 'cancelled' | 'errored' | 'skipped'
export type JobStatus =
  | 'pending' | 'queued' | 'running' | 'success' | 'failure' | 'cancelled' | 'errored' | 'skipped'
export type StepStatus = JobStatus | 'timeout'
export type AnyStatus = RunStatus | JobStatus | StepStatus
export const RUN_STATUSES: readonly RunStatus[] = [
  'requested', 'running', 'success', 'failure', 'cancelled', 'errored', 'skipped']
export const TRIGGERS = ['push', 'pull_request', 'tag', 'schedule', 'manual', 'rerun',
  'rollback'] as const

export interface Session {
  name: string
  user: string
  admin: boolean
  roles: Record<string, Role>
  every_project: Role | null
  read_only: boolean
  session: boolean
  csrf_token?: string
}

export interface ForgeEvent {
  kind?: string // push, tag, pull_request
  provider?: string
  ref?: string
  branch?: string
  tag?: string
  commit?: string
  target_branch?: string
  pr_number?: number
  fork?: boolean
  action?: string
  author?: string
  message?: string
}

export interface RunSummary {
  id: string
  project: string
  status: RunStatus
  trigger: string
  branch: string
  commit: string
  created_at: string
  finished_at: string
  duration_s: number | null
  // not in every server's summary: shown when present
  requested_by?: string
  message?: string
  tag?: string // the summary's (the run page has the whole forge_event)
  pr_number?: number
  forge_event?: ForgeEvent | null
  awaiting_approval?: string
}

export interface Step {
  name: string
  status: StepStatus
  exit_code: number | null
  attempt: number
  started_at: string
  finished_at: string
  duration_s: number | null
  reason: string
  log_truncated: string
}

export interface Job {
  name: string
  needs: string[]
  status: JobStatus
  steps: Step[]
  worker: string
  executor: string
  started_at: string
  finished_at: string
  duration_s: number | null
  reason: string
  attempt: number
  log_lines: number
  environment: string
  awaiting_approval: Role | ''
  approval_deadline: string
  approved_by: string
  outputs?: [string, string][] // what its steps wrote to $CYCLONE_OUTPUT (secrets masked)
  reused_from?: string // the run whose result it took (rerun --failed)
}

export interface Artifact {
  job: string
  name: string
  digest: string
  size: number
  files: number
  paths: string[]
  uploaded_at: string
  from_run: string
}

export interface CacheUse {
  job: string
  key: string
  outcome: 'hit' | 'partial' | 'miss' | 'saved'
  restored_key: string
  size: number
}

export interface TestReport {
  job: string
  tests: number
  passed: number
  failed: number
  errors: number
  skipped: number
  duration_s: number
  failures: { name: string; classname: string; message: string; file: string }[]
  warnings: string[]
}

export interface Image {
  name: string
  repository: string
  tags: string[]
  digest: string
  job: string
  step: string
  promoted_from: string
  pushed_at: string
}

export interface RunDeployment {
  job: string
  step: string
  environment: string
  target: string
  image: string
  state: 'started' | 'succeeded' | 'rolled_back' | 'failed'
  previous: string
  reason: string
  approved_by: string
  started_at: string
  finished_at: string
}

/** One waiting thing of a run (the run itself when ``job`` is ""), and why, in words
 *  (shared/projections/waiting.py). */
export interface Waiting {
  kind: string // approval, slots, queue, admission, checkout, plan, cancel, needs, job_approval, parallel, worker, no_worker…
  text: string
  job: string
  since?: string
  on?: string[]
  role?: string
  deadline?: string
  labels?: string[] // a queued job's runs-on: the worker labels it waits for
}

export interface Run extends RunSummary {
  pipeline_file: string
  source: string
  source_kind: string
  params: Record<string, string>
  forge_event: ForgeEvent | null
  started_at: string
  cancel_requested: boolean
  checkout: '' | 'queued' | 'done'
  log_lines: number
  reason: string
  secrets_withheld: string
  awaiting_approval: string
  approved_by: string
  requested_by: string
  jobs: Job[]
  images: Image[]
  deployments: RunDeployment[]
  artifacts?: Artifact[]
  caches?: CacheUse[]
  test_reports?: TestReport[]
  rerun_of?: string
  collected?: string[] // what retention removed ("logs", "artifacts")
  last_seq: number
  waiting?: Waiting[]
}

export interface RecordedEvent {
  id: string
  stream: string
  seq: number
  type: string
  version: number
  ts: string
  data: Record<string, unknown>
  meta: Record<string, string>
  position: number
}

export interface LogLine {
  index: number
  job: string
  step: string
  stream: string
  ts: string
  text: string
  attempt?: number
}

export interface NotifyChannel {
  kind: string
  id: string
  target: string
  secret_set?: boolean
}

export interface NotifyRule {
  name: string
  when: string[]
  branches: string[]
  source: string
  channels: NotifyChannel[]
}

export interface Project {
  name: string
  repo: string
  default_branch: string
  pipeline_file: string
  env: Record<string, string>
  max_concurrent_runs: number
  forge: { kind: string; api_url: string; repo: string; token_set: boolean } | null
  hook_secret_set: boolean
  auto_cancel: boolean
  schedules: string[]
  notify: NotifyRule[]
  fork_prs: 'approve' | 'run-without-secrets' | 'never'
  trusted: boolean
  created_at: string
  updated_at: string
}

export interface ProjectPatch {
  default_branch?: string
  pipeline_file?: string
  env?: Record<string, string>
  max_concurrent_runs?: number
  auto_cancel?: boolean
  schedules?: string[]
  notify?: unknown[]
  fork_prs?: Project['fork_prs']
  hook_secret?: string
}

export interface Secret {
  name: string
  scope?: string
  created_at?: string
  updated_at?: string
  implicit?: boolean
}

export interface Deployment {
  run: string
  project: string
  commit: string
  branch: string
  environment: string
  target: string
  image: string
  state: RunDeployment['state']
  previous: string
  reason: string
  approved_by: string
  requested_by: string
  job: string
  step: string
  started_at: string
  finished_at: string
}

export interface RunChange {
  position: number
  type: string
  run: RunSummary
}

export interface RunFilter {
  project?: string
  status?: string
  branch?: string
  trigger?: string
  limit?: number
  cursor?: string
}

// --- the HTTP side --------------------------------------------------------------------

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, detail: string) {
    super(detail)
  }
}

let csrfToken = ''
let unauthorized: () => void = () => undefined

/** The CSRF token every write made with the session cookie sends. */
export function setCsrfToken(token: string): void {
  csrfToken = token
}

/** What a 401 from any call does (the app sends the user to the login page). */
export function onUnauthorized(handler: () => void): void {
  unauthorized = handler
}

type Query = Record<string, string | number | undefined | null>

export function apiUrl(path: string, query: Query = {}): string {
  const params = new URLSearchParams()
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, String(value))
  }
  const text = params.toString()
  return `/api/v1${path}${text ? `?${text}` : ''}`
}

async function failure(response: Response): Promise<ApiError> {
  let code = 'error'
  let detail = `${response.status} ${response.statusText}`
  try {
    const body = (await response.json()) as { error?: string; detail?: string }
    code = body.error ?? code
    detail = body.detail ?? detail
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) unauthorized()
  return new ApiError(response.status, code, detail)
}

async function send(method: string, path: string, query: Query = {}, body?: unknown,
  signal?: AbortSignal): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'application/json' }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken
  const response = await fetch(apiUrl(path, query), {
    method, headers, signal, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  if (!response.ok) throw await failure(response)
  return response
}

async function json<T>(method: string, path: string, query: Query = {}, body?: unknown,
  signal?: AbortSignal): Promise<T> {
  const response = await send(method, path, query, body, signal)
  return (response.status === 204 ? undefined : await response.json()) as T
}

const enc = encodeURIComponent

// --- session --------------------------------------------------------------------------

export const getSession = () => json<Session>('GET', '/session')
export const login = (user: string, password: string) =>
  json<Session & { expires_at: string }>('POST', '/session', {}, { user, password })
export const logout = () => json<void>('DELETE', '/session')

// --- projects -------------------------------------------------------------------------

export const listProjects = () =>
  json<{ projects: Project[] }>('GET', '/projects').then((r) => r.projects)
export const getProject = (name: string) => json<Project>('GET', `/projects/${enc(name)}`)
export const patchProject = (name: string, patch: ProjectPatch) =>
  json<Project>('PATCH', `/projects/${enc(name)}`, {}, patch)
export const listMembers = (name: string) =>
  json<{ members: Record<string, Role> }>('GET', `/projects/${enc(name)}/members`)
    .then((r) => r.members)
export const listSecrets = (name: string) =>
  json<{ secrets: Secret[] }>('GET', `/projects/${enc(name)}/secrets`).then((r) => r.secrets)
export const setSecret = (name: string, secret: string, value: string) =>
  json<Secret>('PUT', `/projects/${enc(name)}/secrets/${enc(secret)}`, {}, { value })
export const deleteSecret = (name: string, secret: string) =>
  json<void>('DELETE', `/projects/${enc(name)}/secrets/${enc(secret)}`)
export const listDeployments = (name: string, environment?: string) =>
  json<{ deployments: Deployment[] }>('GET', `/projects/${enc(name)}/deployments`,
    { environment }).then((r) => r.deployments)
export const rollback = (name: string, environment: string) =>
  json<{ id: string; image: string }>('POST',
    `/projects/${enc(name)}/environments/${enc(environment)}/rollback`)
export const badgeUrl = (name: string, branch?: string) =>
  apiUrl(`/projects/${enc(name)}/badge.svg`, { branch })
export const hookUrl = (provider: string, project: string) =>
  `/api/v1/hooks/${enc(provider)}/${enc(project)}`
export const HOOK_PROVIDERS = ['github', 'gitlab', 'gitea', 'forgejo', 'gogs', 'generic']

// --- runs -----------------------------------------------------------------------------

export const listRuns = (filter: RunFilter, signal?: AbortSignal) =>
  json<{ runs: RunSummary[]; next: string | null }>('GET', '/runs', { ...filter }, undefined,
    signal)
export const getRun = (id: string, signal?: AbortSignal) =>
  json<Run>('GET', `/runs/${enc(id)}`, {}, undefined, signal)
export const startRun = (project: string, body: {
  ref?: string; commit?: string; params: Record<string, string> }) =>
  json<{ id: string }>('POST', `/projects/${enc(project)}/runs`, {}, body)
export type RunAction = 'cancel' | 'rerun' | 'approve' | 'reject'
export const runAction = (id: string, action: RunAction, body?: { secrets: boolean }) =>
  json<{ id: string }>('POST', `/runs/${enc(id)}/${action}`, {}, body)
export const jobDecision = (id: string, job: string, approve: boolean, comment: string) =>
  json<{ id: string }>('POST', `/runs/${enc(id)}/jobs/${enc(job)}/${approve ? 'approve' : 'reject'}`,
    {}, { comment })
export const listRunEvents = (id: string, after = 0) =>
  json<{ events: RecordedEvent[] }>('GET', `/runs/${enc(id)}/events`, { after })
    .then((r) => r.events)

// live streams (Server-Sent Events; see sse.ts)
export const changesUrl = (project?: string) => apiUrl('/changes', { project })
export const runEventsUrl = (id: string, after: number) =>
  apiUrl(`/runs/${enc(id)}/events`, { follow: 1, after })
export const logFollowUrl = (id: string, from: number) =>
  apiUrl(`/runs/${enc(id)}/logs`, { follow: 1, from })
export const rawLogUrl = (id: string) => apiUrl(`/runs/${enc(id)}/logs`)
export const artifactUrl = (id: string, a: Pick<Artifact, 'job' | 'name'>) =>
  apiUrl(`/runs/${enc(id)}/artifacts/${enc(a.job)}/${enc(a.name)}`)

// --- logs -----------------------------------------------------------------------------

/** A line as the log server sends it (``i`` is its index; ``index`` in newer servers). */
export function logLine(raw: Record<string, unknown>): LogLine {
  const attempt = typeof raw.attempt === 'number' ? raw.attempt : undefined
  return {
    index: Number(raw.index ?? raw.i), job: String(raw.job ?? ''), step: String(raw.step ?? ''),
    stream: String(raw.stream ?? ''), ts: String(raw.ts ?? ''), text: String(raw.text ?? ''),
    ...(attempt === undefined ? {} : { attempt }),
  }
}

/** Reads an NDJSON body line by line, stopping (and aborting the rest) when ``take``
 *  says so: memory stays at one window whether or not the server honours ``limit``. */
async function readNdjson(response: Response, take: (raw: Record<string, unknown>) => boolean,
  abort: AbortController): Promise<void> {
  if (!response.body) return
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  let rest = ''
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      const parts = (rest + value).split('\n')
      rest = parts.pop() ?? ''
      for (const part of parts) {
        if (part && !take(JSON.parse(part) as Record<string, unknown>)) {
          abort.abort()
          return
        }
      }
    }
    if (rest) take(JSON.parse(rest) as Record<string, unknown>)
  } finally {
    reader.releaseLock()
  }
}

export interface LogWindow {
  lines: LogLine[]
  total: number | null // X-Cyclone-Log-Lines: every line the run has logged so far
}

/** One job's (one step's) lines: what a window or a search keeps. */
export interface LineFilter {
  job: string
  step: string
}

/** Up to ``limit`` lines of a run's log from index ``from`` on (of one step, with
 *  ``only``: the server reads past the others). */
export async function fetchLogWindow(id: string, from: number, limit: number,
  signal?: AbortSignal, only?: LineFilter): Promise<LogWindow> {
  const abort = new AbortController()
  signal?.addEventListener('abort', () => abort.abort())
  const response = await send('GET', `/runs/${enc(id)}/logs`, { from, limit, ...only },
    undefined, abort.signal)
  const header = response.headers.get('X-Cyclone-Log-Lines')
  const lines: LogLine[] = []
  try {
    await readNdjson(response, (raw) => lines.push(logLine(raw)) < limit, abort)
  } catch (error) {
    if (!abort.signal.aborted || signal?.aborted) throw error
  }
  return { lines, total: header === null ? null : Number(header) }
}

export interface SearchPage {
  matches: LogLine[]
  next: number | null // the `from` to go on with; null: the end of the stored log
  total?: number
}

/** Lines holding ``q`` (case-insensitive, colours ignored) from index ``from`` on: at
 *  most ``limit``; a page may hold none and still have a ``next`` (the server reads a
 *  bounded number of lines a request). */
export async function searchLogs(id: string, q: string, from: number, limit: number,
  signal?: AbortSignal, only?: LineFilter): Promise<SearchPage> {
  const page = await json<{ matches: Record<string, unknown>[]; next: number | null;
    total?: number }>('GET', `/runs/${enc(id)}/logs/search`, { q, from, limit, ...only },
  undefined, signal)
  return { ...page, matches: page.matches.map(logLine) }
}
