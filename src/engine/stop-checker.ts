/**
 * Stop strings over streamed text: text that could still be the start of a stop string is held
 * back until it can't be; a stop string is never part of the text handed out.
 */
export class StopChecker {
  private held = '';

  constructor(private readonly stops: readonly string[]) {}

  /** Adds generated text; returns the text that is now final, and the stop string if one matched. */
  push(text: string): { text: string; stop: string | null } {
    if (this.stops.length === 0) return { text, stop: null };
    const held = this.held + text;
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
      return { text: held.slice(0, matchAt), stop: matched };
    }
    const keep = this.longestStopPrefixSuffix(held);
    this.held = held.slice(held.length - keep);
    return { text: held.slice(0, held.length - keep), stop: null };
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
        if (text.endsWith(stop.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
