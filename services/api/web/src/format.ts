// How times, durations, commits and triggers are written on the pages.
import type { ForgeEvent, RunSummary } from './api'

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '–'
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`
  const s = Math.round(seconds)
  if (s < 60) return `${s}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m ${s % 60}s`
  return `${Math.floor(m / 60)}h ${m % 60}m`
}

export function seconds(from: string, to: string | number = Date.now()): number | null {
  if (!from) return null
  const end = typeof to === 'number' ? to : Date.parse(to)
  return (end - Date.parse(from)) / 1000
}

export function ago(ts: string, now = Date.now()): string {
  if (!ts) return '–'
  const s = Math.max(0, (now - Date.parse(ts)) / 1000)
  if (s < 60) return 'just now'
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`
  return `${Math.floor(s / 86400)} d ago`
}

export function when(ts: string): string {
  return ts ? new Date(ts).toLocaleString() : '–'
}

export function clock(ts: string): string {
  return ts ? new Date(ts).toLocaleTimeString() : ''
}

export const shortSha = (sha: string) => (sha ? sha.slice(0, 8) : '–')

export function firstLine(text: string | undefined): string {
  return (text ?? '').split('\n', 1)[0] ?? ''
}

/** The run's ref as a person names it: a branch, tag v1.2 or PR #7 (→ main). */
export function refOf(
  run: Pick<RunSummary, 'branch' | 'forge_event' | 'tag' | 'pr_number'>): string {
  const event: ForgeEvent = run.forge_event ?? {}
  if (event.kind === 'pull_request' && event.pr_number) {
    const target = event.target_branch ? ` → ${event.target_branch}` : ''
    return `PR #${event.pr_number}${event.fork ? ' (fork)' : ''}${target}`
  }
  if (run.pr_number) return `PR #${run.pr_number}`
  const tag = event.tag ?? run.tag
  if (tag) return `tag ${tag}`
  return run.branch || '–'
}

const TRIGGER_NAMES: Record<string, string> = {
  push: 'push', pull_request: 'pull request', tag: 'tag', schedule: 'schedule',
  manual: 'manual', rerun: 'rerun', rollback: 'rollback', webhook: 'webhook',
}

export function triggerOf(run: Pick<RunSummary, 'trigger' | 'requested_by'>): string {
  const name = TRIGGER_NAMES[run.trigger] ?? (run.trigger || '–')
  return run.requested_by ? `${name} by ${run.requested_by}` : name
}

export function messageOf(run: Pick<RunSummary, 'message' | 'forge_event'>): string {
  return firstLine(run.message ?? run.forge_event?.message)
}
