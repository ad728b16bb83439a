const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;

/**
 * Splits a JSON list into the raw text of its elements without building one giant string, so
 * files larger than V8's string limit (the real ShareGPT file is ~640 MB) can be read.
 * Each element still has to be parsed (and validated) by the caller.
 */
export function* jsonListElements(data: Buffer, source: string): Generator<string> {
  let i = skipSpace(data, 0);
  if (data[i] !== OPEN_BRACKET) throw new Error(`${source}: not a JSON list (it must start with '[')`);
  i++;
  let depth = 0;
  let start = -1;
  let inString = false;
  for (; i < data.length; i++) {
    const c = data[i]!;
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
      continue;
    }
    if (c === QUOTE) {
      inString = true;
      if (start < 0) start = i;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (start < 0) start = i;
      depth++;
    } else if ((c === CLOSE_BRACE || c === CLOSE_BRACKET) && depth > 0) {
      depth--;
    } else if (depth === 0 && (c === COMMA || c === CLOSE_BRACKET)) {
      if (start >= 0) yield data.toString('utf8', start, i);
      else if (c === COMMA) throw new Error(`${source}: empty element before byte ${i}`);
      start = -1;
      if (c === CLOSE_BRACKET) {
        if (skipSpace(data, i + 1) !== data.length) throw new Error(`${source}: unexpected text after the closing ']'`);
        return;
      }
    } else if (start < 0 && !isSpace(c)) {
      start = i;
    }
  }
  throw new Error(`${source}: the JSON list is not closed (truncated file?)`);
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function skipSpace(data: Buffer, i: number): number {
  while (i < data.length && isSpace(data[i]!)) i++;
  return i;
}
