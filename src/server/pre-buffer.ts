import type { TemplateItem } from '../store/files/files.js';

/**
 * Reads templates from `stream` until their bodies reach `limitBytes` or the stream ends, before a
 * database connection is taken: most inputs end within it, so slow or stalled clients hold no
 * connection (and an early bad line costs none). `whole`: the stream ended within the limit.
 * `all()` yields the templates read, then the rest of the stream.
 */
export async function preBuffer(
  stream: AsyncGenerator<TemplateItem>,
  limitBytes: number,
): Promise<{ whole: boolean; all: () => AsyncGenerator<TemplateItem> }> {
  const head: TemplateItem[] = [];
  let headBytes = 0;
  let whole = false;
  while (headBytes < limitBytes) {
    const next = await stream.next();
    if (next.done) {
      whole = true;
      break;
    }
    head.push(next.value);
    headBytes += next.value.body.length;
  }
  async function* all(): AsyncGenerator<TemplateItem> {
    yield* head;
    if (!whole) yield* stream;
  }
  return { whole, all };
}
