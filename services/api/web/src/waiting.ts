// Why a run (or a job of it) is waiting, in words: the server's `waiting` when it sends
// one, else derived from the run view (approvals and their role, a fork's pull request,
// the run's admission and checkout, each job's needs and the worker queue).
import type { Job, Run, Waiting } from './api'
import { baseName } from './graph'

const DONE = new Set(['success', 'failure', 'cancelled', 'errored', 'skipped', 'timeout'])

export function waitingReasons(run: Run): Waiting[] {
  if (DONE.has(run.status)) return []
  if (run.waiting) return run.waiting
  const reasons: Waiting[] = []
  if (run.awaiting_approval) {
    reasons.push(wait('approval', '', `waits for a maintainer's approval: ${run.awaiting_approval}`))
  } else if (run.status === 'requested') {
    reasons.push(run.checkout === 'queued'
      ? wait('checkout', '', 'waits for its checkout (reading the pipeline file from the repository)')
      : wait('admission', '', 'waits to be admitted (the project\'s max_concurrent_runs, or runs before it)'))
  }
  if (run.cancel_requested) reasons.push(wait('cancel', '', 'is being cancelled'))
  for (const job of run.jobs) {
    const reason = jobWaiting(job, run)
    if (reason) reasons.push(reason)
  }
  return reasons
}

const wait = (kind: string, job: string, text: string): Waiting => ({ kind, job, text })

function jobWaiting(job: Job, run: Run): Waiting | null {
  if (job.status === 'queued') return wait('worker', job.name, 'is queued for a worker')
  if (job.status !== 'pending') return null
  if (job.awaiting_approval) {
    const deadline = job.approval_deadline
      ? ` (rejected at ${new Date(job.approval_deadline).toLocaleString()} without one)` : ''
    return { ...wait('job_approval', job.name, `waits for approval by a ${job.awaiting_approval}${deadline}`),
      role: job.awaiting_approval }
  }
  const open = job.needs.filter((name) => {
    const need = run.jobs.find((j) => j.name === name)
    return need !== undefined && !DONE.has(need.status)
  })
  if (open.length) return { ...wait('needs', job.name, `waits for ${names(open, job.needs)} to finish`), on: open }
  return run.status === 'running'
    ? wait('parallel', job.name, 'waits for a place among the run\'s parallel jobs') : null
}

/** Needs as a person names them: a matrix whose every job is open by its name alone. */
function names(open: string[], needs: string[]): string {
  const shown: string[] = []
  for (const name of open) {
    const base = baseName(name)
    const all = needs.filter((n) => baseName(n) === base)
    const label = all.length > 1 && all.every((n) => open.includes(n)) ? base : name
    if (!shown.includes(label)) shown.push(label)
  }
  return shown.join(', ')
}
