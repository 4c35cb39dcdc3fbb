// One run, live: its view and its event history. The events stream (after the last
// event read) appends each event to the history and re-reads the view, at most
// twice a second, until the stream's `end`.
import { onUnmounted, ref, watch, type Ref } from 'vue'
import { getRun, listRunEvents, runEventsUrl, type RecordedEvent, type Run } from '../api'
import { openStream, type Stream } from '../sse'
import { message } from './useAsync'

export function useRun(id: Ref<string>) {
  const run = ref<Run | null>(null)
  const events = ref<RecordedEvent[]>([])
  const error = ref('')
  const live = ref(false)
  let stream: Stream | null = null
  let timer = 0
  let pending = false

  async function refresh(): Promise<void> {
    try {
      run.value = await getRun(id.value)
      error.value = ''
    } catch (e) {
      error.value = message(e)
    }
  }

  function soon(): void {
    if (pending) return
    pending = true
    timer = window.setTimeout(() => { pending = false; void refresh() }, 500)
  }

  function follow(after: number): void {
    stream = openStream(runEventsUrl(id.value, after), {
      event: (data) => { events.value.push(data as RecordedEvent); soon() },
      end: () => { stream?.close(); live.value = false; void refresh() },
    }, (open) => (live.value = open))
  }

  async function open(): Promise<void> {
    stream?.close()
    window.clearTimeout(timer)
    pending = false
    run.value = null
    events.value = []
    await refresh()
    const current = run.value as Run | null // (refresh set it)
    if (!current) return
    try {
      events.value = await listRunEvents(id.value)
    } catch (e) {
      error.value = message(e)
    }
    const done = ['success', 'failure', 'cancelled', 'errored', 'skipped'].includes(current.status)
    const last = events.value.at(-1)?.seq ?? 0
    if (last > current.last_seq) soon() // events between the two reads
    if (!done) follow(last)
  }

  watch(id, () => void open(), { immediate: true })
  onUnmounted(() => { stream?.close(); window.clearTimeout(timer) })
  return { run, events, error, live, refresh }
}
