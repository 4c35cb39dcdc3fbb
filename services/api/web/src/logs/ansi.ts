// A log line's text as HTML: ANSI colours by ansi_up (which escapes the rest), each line
// on its own (a reset first), so a line renders the same whichever lines are loaded.
import { AnsiUp } from 'ansi_up'

const ansi = new AnsiUp()
ansi.use_classes = true

const cache = new WeakMap<object, string>()

export function lineHtml(line: { text: string }): string {
  let html = cache.get(line)
  if (html === undefined) {
    html = ansi.ansi_to_html(`\x1b[0m${line.text}\x1b[0m`)
    cache.set(line, html)
  }
  return html
}
