/**
 * Reads Llama 3.1's JSON tool-call format out of generated text, as it grows:
 *   [<|python_tag|>]{"name": "<function>", "parameters": <JSON value>}[; {"name": ...}]...
 * ("arguments" is accepted for "parameters", any JSON whitespace between tokens). The scan is
 * prefix-stable: a call's name and the text of its arguments only ever grow as text is added,
 * which is what lets a stream send them as deltas.
 */
export interface ScannedCall {
  name: string;
  /** The parameters' JSON text so far (all of it once `complete`). */
  arguments: string;
  complete: boolean;
}

export interface ToolCallScan {
  /** 'calls': the text is (so far) tool calls; 'text': it is not; 'open': too short to tell. */
  kind: 'calls' | 'text' | 'open';
  /** Calls whose name is known, in order. */
  calls: ScannedCall[];
}

const pythonTag = '<|python_tag|>';

export function scanToolCalls(text: string): ToolCallScan {
  const r = new Reader(text);
  r.skipSpace();
  if (r.rest().startsWith(pythonTag)) r.pos += pythonTag.length;
  else if (pythonTag.startsWith(r.rest()) && r.rest().length > 0) return { kind: 'open', calls: [] };
  const calls: ScannedCall[] = [];
  for (;;) {
    const call = readCall(r);
    if (call === 'mismatch') return { kind: calls.length > 0 ? 'calls' : 'text', calls };
    if (call === 'short') return { kind: calls.length > 0 ? 'calls' : 'open', calls };
    calls.push(call);
    if (!call.complete) return { kind: 'calls', calls };
    r.skipSpace();
    if (r.atEnd()) return { kind: 'calls', calls };
    if (!r.take(';')) return { kind: 'calls', calls }; // text after the calls is not a call: ignored
    r.skipSpace();
  }
}

/** The call at the reader; 'short' when the text ends before its name is known. */
function readCall(r: Reader): ScannedCall | 'mismatch' | 'short' {
  const expect = (literal: string): 'ok' | 'mismatch' | 'short' => {
    r.skipSpace();
    const rest = r.rest();
    if (rest.startsWith(literal)) {
      r.pos += literal.length;
      return 'ok';
    }
    return literal.startsWith(rest) ? 'short' : 'mismatch';
  };
  for (const literal of ['{', '"name"', ':']) {
    const got = expect(literal);
    if (got !== 'ok') return got;
  }
  r.skipSpace();
  if (r.atEnd()) return 'short';
  const name = r.readString();
  if (name === 'mismatch' || name === 'short') return name;
  const call: ScannedCall = { name, arguments: '', complete: false };
  for (const literal of [',', '"']) {
    const got = expect(literal);
    if (got === 'mismatch') return 'mismatch';
    if (got === 'short') return call;
  }
  const key = r.readStringBody();
  if (key === 'short') return call;
  if (key !== 'parameters' && key !== 'arguments') return 'mismatch';
  const colon = expect(':');
  if (colon !== 'ok') return colon === 'mismatch' ? 'mismatch' : call;
  r.skipSpace();
  const start = r.pos;
  const end = r.skipValue();
  if (end === 'mismatch') return 'mismatch';
  call.arguments = r.text.slice(start, end === 'short' ? r.text.length : end);
  if (end === 'short') return call;
  const close = expect('}');
  if (close === 'mismatch') return 'mismatch';
  call.complete = close === 'ok';
  return call;
}

class Reader {
  pos = 0;
  constructor(readonly text: string) {}

  rest(): string {
    return this.text.slice(this.pos);
  }

  atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  take(ch: string): boolean {
    if (this.text[this.pos] !== ch) return false;
    this.pos++;
    return true;
  }

  skipSpace(): void {
    while (this.pos < this.text.length && ' \t\n\r'.includes(this.text[this.pos]!)) this.pos++;
  }

  /** A JSON string starting at the reader. */
  readString(): string | 'mismatch' | 'short' {
    if (!this.take('"')) return 'mismatch';
    return this.readStringBody();
  }

  /** The rest of a JSON string whose opening quote was read. */
  readStringBody(): string | 'short' {
    const start = this.pos - 1;
    const end = this.stringEnd(this.pos);
    if (end < 0) return 'short';
    this.pos = end;
    try {
      return JSON.parse(this.text.slice(start, end)) as string;
    } catch {
      return this.text.slice(start + 1, end - 1);
    }
  }

  /** Index just past the closing quote of a string whose body starts at `from`; -1 when the text ends first. */
  private stringEnd(from: number): number {
    for (let i = from; i < this.text.length; i++) {
      const ch = this.text[i];
      if (ch === '\\') i++;
      else if (ch === '"') return i + 1;
    }
    return -1;
  }

  /** Skips one JSON value (objects and arrays by bracket depth, strings with escapes); returns its end. */
  skipValue(): number | 'mismatch' | 'short' {
    if (this.atEnd()) return 'short';
    const first = this.text[this.pos]!;
    if (first === '"') {
      const end = this.stringEnd(this.pos + 1);
      return end < 0 ? 'short' : (this.pos = end);
    }
    if (first === '{' || first === '[') {
      let depth = 0;
      for (let i = this.pos; i < this.text.length; i++) {
        const ch = this.text[i]!;
        if (ch === '"') {
          const end = this.stringEnd(i + 1);
          if (end < 0) return 'short';
          i = end - 1;
        } else if (ch === '{' || ch === '[') depth++;
        else if ((ch === '}' || ch === ']') && --depth === 0) return (this.pos = i + 1);
      }
      return 'short';
    }
    let i = this.pos;
    while (i < this.text.length && /[-+0-9a-zA-Z.]/.test(this.text[i]!)) i++;
    if (i === this.pos) return 'mismatch';
    return i === this.text.length ? 'short' : (this.pos = i);
  }
}
