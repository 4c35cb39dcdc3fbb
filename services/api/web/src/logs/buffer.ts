// A run's log as fixed windows of lines, fetched when the viewer shows them and
// dropped least recently used first: memory stays at `maxWindows` windows whatever the
// log's length. Lines of the live stream are appended to the window they continue.
import { fetchLogWindow, type LogLine } from '../api'

export const WINDOW = 500

interface Window {
  lines: LogLine[]
  fetching: AbortController | null
}

export class LogBuffer {
  total = 0 // lines known to exist (X-Cyclone-Log-Lines, the run's count, the stream)
  headerTotal = false // whether the server says its total (windows with `limit`)
  private windows = new Map<number, Window>() // by first index / WINDOW; in LRU order
  private retryMs = new Map<number, number>() // a short window's next wait before a refetch
  private closed = false

  constructor(readonly runId: string, readonly changed: () => void,
    readonly onError: (error: unknown) => void, readonly maxWindows = 40) {}

  /** The line at ``index`` if it is held (and marks its window as just used). */
  line(index: number): LogLine | undefined {
    const key = Math.floor(index / WINDOW)
    const window = this.windows.get(key)
    if (!window) return undefined
    this.windows.delete(key)
    this.windows.set(key, window)
    return window.lines[index - key * WINDOW]
  }

  /** Fetches the windows that hold lines ``from`` to ``to`` (exclusive) and lack some. */
  ensure(from: number, to: number): void {
    const last = Math.min(to, this.total) - 1
    for (let key = Math.floor(Math.max(0, from) / WINDOW); key * WINDOW <= last; key++) {
      const window = this.windows.get(key)
      const end = key * WINDOW + (window?.lines.length ?? 0)
      const short = !window || (window.lines.length < WINDOW && end < this.total)
      if (short && !window?.fetching) void this.fetch(key)
    }
  }

  async fetch(key: number): Promise<LogLine[]> {
    const abort = new AbortController()
    const window = this.windows.get(key) ?? { lines: [], fetching: null }
    window.fetching = abort
    this.put(key, window)
    try {
      const { lines, total } = await fetchLogWindow(this.runId, key * WINDOW, WINDOW, abort.signal)
      if (this.closed) return lines
      if (total !== null) this.headerTotal = true
      if (lines.length >= window.lines.length) window.lines = lines
      this.grow(total ?? key * WINDOW + lines.length)
      this.refetchIfShort(key, window)
      this.changed()
      return lines
    } catch (error) {
      if (!abort.signal.aborted) this.onError(error)
      return []
    } finally {
      window.fetching = null
    }
  }

  /** Fetches the window again, later, while it holds fewer lines than the run has: a run
   * that has just ended may still have lines on their way to the store (a step that
   * printed a million lines ends well before they are all stored), and a finished run's
   * viewer has no live stream to bring them. Backs off to 5 s; stops once complete. */
  private refetchIfShort(key: number, window: Window): void {
    const wanted = Math.min(this.total, (key + 1) * WINDOW) - key * WINDOW
    if (window.lines.length >= wanted) {
      this.retryMs.delete(key)
      return
    }
    const delay = Math.min((this.retryMs.get(key) ?? 125) * 2, 5000)
    this.retryMs.set(key, delay)
    setTimeout(() => {
      const held = this.windows.get(key)
      if (!this.closed && held === window && !held.fetching) void this.fetch(key)
    }, delay)
  }

  /** A line of the live stream: kept when it continues a held window (or starts one). */
  append(line: LogLine): void {
    this.grow(line.index + 1)
    const key = Math.floor(line.index / WINDOW)
    let window = this.windows.get(key)
    if (!window && line.index % WINDOW === 0) {
      window = { lines: [], fetching: null }
      this.put(key, window)
    }
    if (window && line.index === key * WINDOW + window.lines.length) window.lines.push(line)
  }

  grow(total: number): void {
    if (total > this.total) this.total = total
  }

  /** Every held line, in order (for filtering a small log). */
  *held(): Generator<LogLine> {
    const keys = [...this.windows.keys()].sort((a, b) => a - b)
    for (const key of keys) yield* this.windows.get(key)?.lines ?? []
  }

  holdsAll(): boolean {
    let held = 0
    for (const window of this.windows.values()) held += window.lines.length
    return held >= this.total
  }

  close(): void {
    this.closed = true
    for (const window of this.windows.values()) window.fetching?.abort()
    this.windows.clear()
  }

  private put(key: number, window: Window): void {
    this.windows.delete(key)
    this.windows.set(key, window)
    while (this.windows.size > this.maxWindows) {
      const [oldest, dropped] = this.windows.entries().next().value as [number, Window]
      dropped.fetching?.abort()
      this.windows.delete(oldest)
    }
  }
}
