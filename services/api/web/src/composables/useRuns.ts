// The runs list of a filter, kept live by /api/v1/changes: subscribe first, read the
// list once the stream is ready, then apply each change (a change carries the whole
// summary, so one that comes twice is harmless).
import { onUnmounted, ref, watch, type Ref } from 'vue'
import { changesUrl, listRuns, type RunChange, type RunSummary } from '../api'
import { openStream, type Stream } from '../sse'
import { message } from './useAsync'

export interface RunQuery {
  project: string
  branch: string
  status: string
  trigger: string
  cursor: string
}

export function matches(query: RunQuery, run: RunSummary): boolean {
  return (!query.project || run.project === query.project)
    && (!query.branch || run.branch === query.branch)
    && (!query.status || run.status === query.status)
    && (!query.trigger || run.trigger === query.trigger)
}

export function useRuns(query: Ref<RunQuery>, limit = 50) {
  const runs = ref<RunSummary[]>([])
  const next = ref<string | null>(null)
  const error = ref('')
  const loading = ref(false)
  const live = ref(false)
  let stream: Stream | null = null
  let abort: AbortController | null = null

  async function load(): Promise<void> {
    abort?.abort()
    abort = new AbortController()
    loading.value = true
    const q = query.value
    try {
      const page = await listRuns({ project: q.project, branch: q.branch, status: q.status,
        trigger: q.trigger, cursor: q.cursor, limit }, abort.signal)
      runs.value = page.runs.filter((run) => matches(q, run))
      next.value = page.next
      error.value = ''
    } catch (e) {
      if (!abort.signal.aborted) error.value = message(e)
    } finally {
      loading.value = false
    }
  }

  function apply(change: RunChange): void {
    const run = change.run
    const at = runs.value.findIndex((r) => r.id === run.id)
    const fits = matches(query.value, run)
    if (at >= 0) {
      if (fits) runs.value.splice(at, 1, { ...runs.value[at], ...run })
      else runs.value.splice(at, 1)
    } else if (fits && !query.value.cursor) {
      const first = runs.value[0]
      if (!first || run.created_at >= first.created_at) runs.value.unshift(run)
      if (runs.value.length > limit) runs.value.pop()
    }
  }

  function subscribe(): void {
    stream?.close()
    let ready = false // a stream that cannot open (no live streams here): read the list anyway
    stream = openStream(changesUrl(query.value.project || undefined), {
      ready: () => { ready = true; void load() },
      run: (data) => apply(data as RunChange),
    }, (open) => {
      live.value = open
      if (!open && !ready) { ready = true; void load() }
    })
  }

  watch(() => query.value.project, subscribe, { immediate: true })
  watch(() => [query.value.branch, query.value.status, query.value.trigger, query.value.cursor],
    () => void load())
  onUnmounted(() => { stream?.close(); abort?.abort() })
  return { runs, next, error, loading, live, reload: load }
}
