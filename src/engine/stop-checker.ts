/**
 * Stop strings over streamed text: text that could still be the start of a stop string is held
 * back until it can't be; a stop string is never part of the text handed out. It runs once per
 * generated token, so the common case (nothing held, nothing matched) allocates nothing.
 */
export class StopChecker {
  private held = '';
  private readonly result: { text: string; stop: string | null } = { text: '', stop: null };

  constructor(private readonly stops: readonly string[]) {}

  /**
   * Adds generated text; returns the text that is now final, and the stop string if one matched.
   * The returned object is reused by the next call: read it before pushing again.
   */
  push(text: string): { text: string; stop: string | null } {
    if (this.stops.length === 0) return this.answer(text, null);
    const held = this.held === '' ? text : this.held + text;
    let matchAt = -1;
    let matched: string | null = null;
    for (const stop of this.stops) {
      const at = held.indexOf(stop);
      if (at >= 0 && (matchAt < 0 || at < matchAt)) {
        matchAt = at;
        matched = stop;
      }
    }
    if (matched !== null) {
      this.held = '';
      return this.answer(held.slice(0, matchAt), matched);
    }
    const keep = this.longestStopPrefixSuffix(held);
    if (keep === 0) {
      this.held = '';
      return this.answer(held, null);
    }
    this.held = held.slice(held.length - keep);
    return this.answer(held.slice(0, held.length - keep), null);
  }

  private answer(text: string, stop: string | null): { text: string; stop: string | null } {
    this.result.text = text;
    this.result.stop = stop;
    return this.result;
  }

  /** At the end of generation: the text held back (it never became a stop string). */
  flush(): string {
    const held = this.held;
    this.held = '';
    return held;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  private longestStopPrefixSuffix(text: string): number {
    let best = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, text.length); k > best; k--) {
        if (endsWithPrefixOf(text, stop, k)) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}

/** Whether `text` ends with the first `k` characters of `stop` (compared in place: no slice per try). */
function endsWithPrefixOf(text: string, stop: string, k: number): boolean {
  const offset = text.length - k;
  for (let i = 0; i < k; i++) if (text.charCodeAt(offset + i) !== stop.charCodeAt(i)) return false;
  return true;
}
