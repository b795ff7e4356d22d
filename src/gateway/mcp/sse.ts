/**
 * An event stream read event by event, so the gateway can look into each JSON-RPC message an
 * upstream sends (filtering lists, finding a call's result) while everything it does not change
 * leaves byte for byte as it came: comments, `id:`, `event:`, `retry:` and unknown fields included.
 * Only an event whose message was changed is written anew (its other fields kept, its data as one line).
 */
import { StringDecoder } from 'node:string_decoder';
import { Transform, type TransformCallback } from 'node:stream';

/** Looks at one message; returns (or resolves to) a replacement to send instead, or undefined to send it as it came. */
export type MessageInspector = (message: unknown) => unknown; // a value, or a promise of one

/** What a run of input became: text to send as it is, or an event whose message must be inspected first. */
type Piece = string | { message: unknown; kept: string; raw: string };

/** One event larger than this is no MCP message the gateway will hold in memory. */
export const MAX_EVENT_BYTES = 16 * 1024 * 1024;

export class SseInspector extends Transform {
  readonly #inspect: MessageInspector;
  readonly #decoder = new StringDecoder('utf8');
  #pending = '';
  /** The lines of the event being read, as received (terminators included). */
  #event: string[] = [];
  #eventBytes = 0;

  constructor(inspect: MessageInspector) {
    super();
    this.#inspect = inspect;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.#send(() => this.#feed(this.#decoder.write(chunk))).then(() => done(), done);
  }

  override _flush(done: TransformCallback): void {
    // A stream that ends inside an event: the client's parser drops it too, so nothing more is sent.
    this.#send(() => this.#feed(this.#decoder.end())).then(() => done(), done);
  }

  /** Pushes the pieces in order, each inspected message once its inspection has settled. */
  async #send(read: () => Piece[]): Promise<void> {
    let out = '';
    for (const piece of read()) {
      if (typeof piece === 'string') {
        out += piece;
        continue;
      }
      const replaced = await this.#inspect(piece.message);
      out += replaced === undefined ? piece.raw : `${piece.kept}data: ${JSON.stringify(replaced)}\n\n`;
    }
    if (out) this.push(out);
  }

  #feed(text: string): Piece[] {
    let buf = this.#pending + text;
    const out: Piece[] = [];
    for (;;) {
      const i = buf.search(/[\r\n]/);
      if (i < 0) break;
      // A CR at the very end may be the first half of CRLF: wait for the next chunk.
      if (buf[i] === '\r' && i === buf.length - 1) break;
      const end = buf[i] === '\r' && buf[i + 1] === '\n' ? i + 2 : i + 1;
      const line = buf.slice(0, end);
      buf = buf.slice(end);
      if (end - (line.endsWith('\r\n') ? 2 : 1) === 0) {
        out.push(this.#dispatch(line));
        continue;
      }
      this.#eventBytes += line.length;
      if (this.#eventBytes > MAX_EVENT_BYTES) throw new Error('an event of the upstream stream is larger than the gateway accepts');
      // A comment alone (keep-alive) goes at once, so the client sees the stream is alive.
      if (line.startsWith(':') && this.#event.length === 0) out.push(line);
      else this.#event.push(line);
    }
    if (buf.length > MAX_EVENT_BYTES) throw new Error('an event of the upstream stream is larger than the gateway accepts');
    this.#pending = buf;
    return out;
  }

  /** The event is complete (a blank line): what to send for it. */
  #dispatch(blank: string): Piece {
    const lines = this.#event;
    this.#event = [];
    this.#eventBytes = 0;
    if (!lines.length) return blank;
    let type = '';
    const data: string[] = [];
    for (const l of lines) {
      const body = l.replace(/\r?\n$|\r$/, '');
      const colon = body.indexOf(':');
      const field = colon < 0 ? body : body.slice(0, colon);
      let value = colon < 0 ? '' : body.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') type = value;
    }
    const raw = lines.join('') + blank;
    if (!data.length || (type !== '' && type !== 'message')) return raw;
    let message: unknown;
    try {
      message = JSON.parse(data.join('\n'));
    } catch {
      // Not JSON: the client's parser refuses it as well.
      return raw;
    }
    return { message, raw, kept: lines.filter((l) => !/^data(:|\r?\n$|\r$)/.test(l)).join('') };
  }
}
