// The job graph's layout (dagre): one node per job of the pipeline file, a matrix's
// expansions ("build (python=3.12)") grouped in one node, an edge per `needs`.
import dagre from '@dagrejs/dagre'
import type { Job, JobStatus } from './api'

export interface GraphNode {
  id: string // the job's name in the file (a matrix's base name)
  x: number // top left
  y: number
  width: number
  height: number
  members: string[] // the run's job names, one unless a matrix
  matrix: boolean
}

export interface GraphEdge {
  from: string
  to: string
  points: { x: number; y: number }[]
}

export interface Layout {
  width: number
  height: number
  nodes: GraphNode[]
  edges: GraphEdge[]
}

const MATRIX = /^(.+) \(([^()]*=[^()]*)\)$/
export const HEADER = 32
export const ROW = 24

export function baseName(job: string): string {
  return MATRIX.exec(job)?.[1] ?? job
}

export function variant(job: string): string {
  return MATRIX.exec(job)?.[2] ?? job
}

/** The layout of the jobs' names and needs (statuses play no part: laid out once). */
export function layoutJobs(jobs: Pick<Job, 'name' | 'needs'>[]): Layout {
  const groups = new Map<string, string[]>()
  for (const job of jobs) {
    const base = baseName(job.name)
    groups.set(base, [...(groups.get(base) ?? []), job.name])
  }
  const g = new dagre.graphlib.Graph()
  g.setGraph({ rankdir: 'LR', nodesep: 18, ranksep: 56, marginx: 8, marginy: 8 })
  g.setDefaultEdgeLabel(() => ({}))
  for (const [base, members] of groups) {
    const matrix = members.length > 1 || MATRIX.test(members[0] ?? '')
    const longest = Math.max(base.length, ...(matrix ? members.map((m) => variant(m).length) : []))
    const width = Math.min(300, Math.max(150, longest * 7.5 + 56))
    g.setNode(base, { width, height: matrix ? HEADER + members.length * ROW + 6 : HEADER + 4 })
  }
  const seen = new Set<string>()
  for (const job of jobs) {
    for (const need of job.needs) {
      const [from, to] = [baseName(need), baseName(job.name)]
      const key = `${from}\u0000${to}`
      if (from !== to && groups.has(from) && !seen.has(key)) {
        seen.add(key)
        g.setEdge(from, to)
      }
    }
  }
  dagre.layout(g)
  const nodes = [...groups].map(([id, members]): GraphNode => {
    const n = g.node(id)
    return { id, members, matrix: members.length > 1 || MATRIX.test(members[0] ?? ''),
      x: (n.x ?? 0) - n.width / 2, y: (n.y ?? 0) - n.height / 2, width: n.width, height: n.height }
  })
  const edges = g.edges().map((e): GraphEdge => ({ from: e.v, to: e.w,
    points: g.edge(e).points ?? [] }))
  const size = g.graph()
  return { width: size.width ?? 0, height: size.height ?? 0, nodes, edges }
}

const ORDER: JobStatus[] = ['failure', 'errored', 'running', 'queued', 'pending', 'cancelled',
  'success', 'skipped']

/** One status for a group of jobs: the most telling of theirs. */
export function groupStatus(statuses: JobStatus[]): JobStatus {
  for (const status of ORDER) if (statuses.includes(status)) return status
  return 'pending'
}
