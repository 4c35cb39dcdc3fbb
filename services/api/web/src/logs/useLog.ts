// The state of a run's log viewer: the windowed buffer of every line, the live stream,
// and, when a step is picked, that step's lines (read through the server's step filter;
// a step too long to hold is shown in the whole log instead, the viewer jumping to it).
import { computed, onUnmounted, ref, shallowRef, watch, type Ref } from 'vue'
import { fetchLogWindow, logFollowUrl, logLine, type LineFilter, type LogLine, type Run } from '../api'
import { message } from '../composables/useAsync'
import { openStream, type Stream } from '../sse'
import { LogBuffer } from './buffer'

export type StepRef = LineFilter

const DONE = ['success', 'failure', 'cancelled', 'errored', 'skipped']
const STEP_CAP = 50_000 // lines of one step held for its own view
const STEP_WINDOW = 10_000

export function useLog(run: Ref<Run>) {
  const buffer = shallowRef<LogBuffer | null>(null)
  const version = ref(0) // bumped (once a frame at most) when lines come
  const total = ref(0)
  const error = ref('')
  const live = ref(false)
  const step = ref<StepRef | null>(null)
  const stepLines = shallowRef<LogLine[] | null>(null) // the picked step's, when held
  let stream: Stream | null = null
  let frame = 0
  let stepAbort = new AbortController()

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
      line: (data) => { take(log, logLine(data as Record<string, unknown>)) },
      end: () => { stream?.close(); live.value = false; changed() },
    }, (isOpen) => (live.value = isOpen))
  }

  function take(log: LogBuffer, line: LogLine): void {
    log.append(line)
    const held = stepLines.value
    const only = step.value
    if (held && only && line.job === only.job && line.step === only.step
      && line.index > (held.at(-1)?.index ?? -1) && held.length < STEP_CAP) held.push(line)
    changed()
  }

  /** The step's lines, a filtered window at a time; null when there are too many. */
  async function pickStep(target: StepRef | null): Promise<boolean> {
    stepAbort.abort()
    stepAbort = new AbortController()
    step.value = target
    stepLines.value = null
    if (!target) return true
    const lines: LogLine[] = []
    try {
      for (let from = 0; ;) {
        const window = await fetchLogWindow(run.value.id, from, STEP_WINDOW, stepAbort.signal, target)
        lines.push(...window.lines.filter((l) => l.job === target.job && l.step === target.step))
        const last = window.lines.at(-1)
        if (lines.length > STEP_CAP) return false
        if (!last || window.lines.length < STEP_WINDOW) break
        from = last.index + 1
      }
    } catch (e) {
      if (!stepAbort.signal.aborted) error.value = message(e)
      return false
    }
    stepLines.value = lines
    changed()
    return true
  }

  function close(): void {
    stream?.close()
    stream = null
    live.value = false
    stepAbort.abort()
    buffer.value?.close()
  }

  const count = computed(() => { void version.value; return stepLines.value?.length ?? total.value })
  const indexAt = (row: number) => stepLines.value?.[row]?.index ?? row
  function lineAt(row: number): LogLine | undefined {
    return stepLines.value ? stepLines.value[row] : buffer.value?.line(row)
  }
  function rowOf(index: number): number | null {
    const held = stepLines.value
    if (!held) return index < total.value ? index : null
    let [low, high] = [0, held.length - 1]
    while (low <= high) {
      const mid = (low + high) >> 1
      const at = held[mid]?.index ?? 0
      if (at === index) return mid
      if (at < index) low = mid + 1
      else high = mid - 1
    }
    return null
  }
  function ensure(firstRow: number, lastRow: number): void {
    if (!stepLines.value) buffer.value?.ensure(firstRow, lastRow + 1)
  }

  watch(() => run.value.id, (id) => void open(id), { immediate: true })
  watch(() => run.value.log_lines, (n) => { buffer.value?.grow(n); changed() })
  onUnmounted(() => { close(); cancelAnimationFrame(frame) })
  return { buffer, version, total, error, live, step, stepLines, count, indexAt, lineAt, rowOf,
    ensure, pickStep }
}
