// Why a run (or a job of it) is waiting, in words: the server's `waiting` when it sends
// one, else derived from the run view (approvals and their role, a fork's pull request,
// the run's admission and checkout, each job's needs and the worker queue).
import type { Job, Run, Waiting } from './api'

const DONE = new Set(['success', 'failure', 'cancelled', 'errored', 'skipped', 'timeout'])

export function waitingReasons(run: Run): Waiting[] {
  if (DONE.has(run.status)) return []
  if (run.waiting) return run.waiting
  const reasons: Waiting[] = []
  if (run.awaiting_approval) {
    reasons.push({ subject: 'run', reason: `waits for a maintainer's approval: ${run.awaiting_approval}` })
  } else if (run.status === 'requested') {
    reasons.push({ subject: 'run', reason: run.checkout === 'queued'
      ? 'waits for its checkout (reading the pipeline file from the repository)'
      : 'waits to be admitted (the project\'s max_concurrent_runs, or runs before it)' })
  }
  if (run.cancel_requested) reasons.push({ subject: 'run', reason: 'is being cancelled' })
  for (const job of run.jobs) {
    const reason = jobWaiting(job, run)
    if (reason) reasons.push({ subject: job.name, reason })
  }
  return reasons
}

function jobWaiting(job: Job, run: Run): string {
  if (job.status === 'queued') return 'is queued for a worker'
  if (job.status !== 'pending') return ''
  if (job.awaiting_approval) {
    const deadline = job.approval_deadline
      ? ` (rejected at ${new Date(job.approval_deadline).toLocaleString()} without one)` : ''
    return `waits for approval by a ${job.awaiting_approval}${deadline}`
  }
  const open = job.needs.filter((name) => {
    const need = run.jobs.find((j) => j.name === name)
    return need !== undefined && !DONE.has(need.status)
  })
  if (open.length) return `waits for ${open.join(', ')} to finish`
  return run.status === 'running' ? 'waits for a slot (the run\'s parallel limit)' : ''
}
