// The state of a run's log viewer: the windowed buffer, the live stream, and the rows
// shown (every line, or one step's lines when the log is small enough to hold whole).
import { computed, onUnmounted, ref, shallowRef, watch, type Ref } from 'vue'
import { logFollowUrl, logLine, type Run } from '../api'
import { message } from '../composables/useAsync'
import { openStream, type Stream } from '../sse'
import { LogBuffer, WINDOW } from './buffer'

export interface StepRef {
  job: string
  step: string
}

const DONE = ['success', 'failure', 'cancelled', 'errored', 'skipped']

export function useLog(run: Ref<Run>) {
  const buffer = shallowRef<LogBuffer | null>(null)
  const version = ref(0) // bumped (once a frame at most) when lines come
  const total = ref(0)
  const error = ref('')
  const live = ref(false)
  const step = ref<StepRef | null>(null)
  let stream: Stream | null = null
  let frame = 0

  function changed(): void {
    if (frame) return
    frame = requestAnimationFrame(() => {
      frame = 0
      total.value = buffer.value?.total ?? 0
      version.value++
    })
  }

  async function open(id: string): Promise<void> {
    close()
    const log = new LogBuffer(id, changed, (e) => (error.value = message(e)))
    buffer.value = log
    error.value = ''
    log.grow(run.value.log_lines)
    const first = await log.fetch(0)
    if (buffer.value !== log) return
    if (!DONE.includes(run.value.status)) follow(log, log.headerTotal ? log.total : first.length)
    changed()
  }

  function follow(log: LogBuffer, from: number): void {
    stream = openStream(logFollowUrl(log.runId, from), {
      line: (data) => { log.append(logLine(data as Record<string, unknown>)); changed() },
      end: () => { stream?.close(); live.value = false; changed() },
    }, (isOpen) => (live.value = isOpen))
  }

  function close(): void {
    stream?.close()
    stream = null
    live.value = false
    buffer.value?.close()
  }

  const small = computed(() => total.value <= 40 * WINDOW)
  // One step's lines, when the whole log can be held; else null (every line is a row).
  const rows = computed<number[] | null>(() => {
    void version.value
    const log = buffer.value
    const only = step.value
    if (!log || !only || !small.value) return null
    log.ensure(0, log.total)
    const shown: number[] = []
    for (const line of log.held()) {
      if (line.job === only.job && line.step === only.step) shown.push(line.index)
    }
    return shown
  })
  const count = computed(() => rows.value?.length ?? total.value)
  const indexAt = (row: number) => rows.value?.[row] ?? row
  function rowOf(index: number): number | null {
    if (!rows.value) return index < total.value ? index : null
    const at = rows.value.indexOf(index)
    return at >= 0 ? at : null
  }

  watch(() => run.value.id, (id) => void open(id), { immediate: true })
  watch(() => run.value.log_lines, (n) => { buffer.value?.grow(n); changed() })
  onUnmounted(() => { close(); cancelAnimationFrame(frame) })
  return { buffer, version, total, error, live, step, small, rows, count, indexAt, rowOf }
}
