// Where a step's log starts in its run's log, without reading the log: lines are stored
// about in time order, so a binary search on their times (a line per request) finds the
// step's start time, then the window there is read for the step's first line.
import { fetchLogWindow } from '../api'

export async function locateStep(runId: string, total: number, job: string, step: string,
  startedAt: string, signal?: AbortSignal): Promise<number | null> {
  let low = 0
  let high = total
  while (low < high) {
    const mid = Math.floor((low + high) / 2)
    const [line] = (await fetchLogWindow(runId, mid, 1, signal)).lines
    if (!line) break
    if (Date.parse(line.ts) < Date.parse(startedAt)) low = mid + 1
    else high = mid
  }
  const from = Math.max(0, low - 50)
  for (let start = from; start < Math.min(total, from + 2000); start += 500) {
    const { lines } = await fetchLogWindow(runId, start, 500, signal)
    const hit = lines.find((l) => l.job === job && l.step === step)
    if (hit) return hit.index
    if (lines.length < 500) break
  }
  return null
}
