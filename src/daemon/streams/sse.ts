/**
 * Server-sent events (the WHATWG event-stream format), parsed from a whole body: events are
 * separated by blank lines; `event:` names one, `data:` lines (joined by "\n") carry its data; lines
 * starting with ":" are comments; "\r\n", "\r" and "\n" all end a line. Pure.
 */
export interface SseEvent {
  /** The `event:` field, or "message" when absent. */
  event: string;
  data: string;
}

export function parseSse(text: string): SseEvent[] {
  const events: SseEvent[] = [];
  let event = '';
  let data: string[] = [];
  let hasData = false;
  const dispatch = () => {
    if (hasData) events.push({ event: event || 'message', data: data.join('\n') });
    event = '';
    data = [];
    hasData = false;
  };
  let start = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  const n = text.length;
  while (start <= n) {
    let end = start;
    while (end < n) {
      const c = text.charCodeAt(end);
      if (c === 0x0a || c === 0x0d) break;
      end++;
    }
    const line = text.slice(start, end);
    if (end >= n) {
      // The last line, unterminated: a field without its blank line is never dispatched.
      if (line !== '') applyField(line);
      break;
    }
    start = text.charCodeAt(end) === 0x0d && text.charCodeAt(end + 1) === 0x0a ? end + 2 : end + 1;
    if (line === '') dispatch();
    else applyField(line);
  }
  return events;

  function applyField(line: string): void {
    if (line.charCodeAt(0) === 0x3a) return; // comment
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    if (name === 'event') event = value;
    else if (name === 'data') {
      data.push(value);
      hasData = true;
    }
  }
}
