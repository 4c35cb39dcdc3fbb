// Who is logged in, and what their role lets them do in a project (as
// services/api/access.py's Principal.role_in decides it; the server refuses anyway).
import { ref } from 'vue'
import { getSession, setCsrfToken, type Role, type Session } from './api'

export const session = ref<Session | null>(null)

const RANK: Record<Role, number> = { viewer: 0, developer: 1, maintainer: 2 }

export async function loadSession(): Promise<Session | null> {
  try {
    const who = await getSession()
    remember(who)
    return who
  } catch {
    remember(null)
    return null
  }
}

export function remember(who: Session | null): void {
  session.value = who
  setCsrfToken(who?.csrf_token ?? '')
}

export function roleIn(project: string, who: Session | null = session.value): Role | null {
  if (!who) return null
  const held: Role[] = []
  const own = who.roles[project]
  if (own) held.push(own)
  if (who.every_project) held.push(who.every_project)
  if (who.admin) held.push('maintainer')
  if (held.length === 0) return null
  if (who.read_only) return 'viewer'
  return held.reduce((best, role) => (RANK[role] > RANK[best] ? role : best))
}

export function can(role: Role, project: string): boolean {
  const held = roleIn(project)
  return held !== null && RANK[held] >= RANK[role]
}

/** Why a button is disabled: "" when the role allows it. */
export function needs(role: Role, project: string): string {
  if (can(role, project)) return ''
  const held = roleIn(project)
  return `needs the ${role} role in ${project} (you have ${held ?? 'none'})`
}
