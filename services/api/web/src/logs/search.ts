// Search in a run's log with next and previous: matches are read from the server a
// page at a time, from the top, as the reader moves past the last one read.
import { searchLogs, type LineFilter } from '../api'

const PAGE = 200
const MAX_MATCHES = 100_000

export class LogSearch {
  matches: number[] = [] // indexes, ascending
  private next: number | null = 0 // where the server's next page starts; null: all read
  private abort = new AbortController()

  constructor(readonly runId: string, readonly query: string, readonly only?: LineFilter) {}

  get exhausted(): boolean {
    return this.next === null || this.matches.length >= MAX_MATCHES
  }

  /** The first match after ``index`` (wrapping to the first of all), or null. */
  async after(index: number): Promise<number | null> {
    for (;;) {
      const found = this.matches.find((m) => m > index)
      if (found !== undefined) return found
      if (this.exhausted) return this.matches[0] ?? null
      await this.more()
    }
  }

  /** The last match before ``index`` (wrapping to the last of all), or null. */
  async before(index: number): Promise<number | null> {
    const earlier = this.matches.filter((m) => m < index)
    if (earlier.length) return earlier[earlier.length - 1] ?? null
    while (!this.exhausted) await this.more()
    return this.matches[this.matches.length - 1] ?? null
  }

  cancel(): void {
    this.abort.abort()
  }

  private async more(): Promise<void> {
    if (this.next === null) return
    const page = await searchLogs(this.runId, this.query, this.next, PAGE, this.abort.signal,
      this.only)
    const last = this.matches[this.matches.length - 1] ?? -1
    this.matches.push(...page.matches.map((m) => m.index).filter((i) => i > last))
    this.next = page.next
  }
}
