// Server-Sent Events with the browser's EventSource (it resumes with Last-Event-ID by
// itself). A stream that fails for good is checked against the session: a 401 sends
// the user to the login page (an EventSource cannot see a status code).
import { getSession } from './api'

export type Handlers = Record<string, (data: unknown, id: string) => void>

export interface Stream {
  close(): void
}

export function openStream(url: string, handlers: Handlers,
  onState: (live: boolean) => void = () => undefined): Stream {
  const source = new EventSource(url, { withCredentials: true })
  for (const [name, handle] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => {
      const message = event as MessageEvent<string>
      handle(JSON.parse(message.data) as unknown, message.lastEventId)
    })
  }
  source.onopen = () => onState(true)
  source.onerror = () => {
    onState(false)
    if (source.readyState === EventSource.CLOSED) void getSession().catch(() => undefined)
  }
  return { close: () => source.close() }
}
