import { describe, expect, it } from 'vitest';
import { StopChecker } from '../../src/engine/stop-checker.js';

describe('StopChecker', () => {
  it('holds back text that may start a stop string and drops the stop string', () => {
    const checker = new StopChecker(['</end>', 'STOP']);
    expect(checker.push('Hello <')).toEqual({ text: 'Hello ', stop: null });
    expect(checker.push('/en')).toEqual({ text: '', stop: null });
    expect(checker.push('d>tail')).toEqual({ text: '', stop: '</end>' });
  });

  it('releases held text once it can no longer be a stop string', () => {
    const checker = new StopChecker(['abc']);
    expect(checker.push('xab')).toEqual({ text: 'x', stop: null });
    expect(checker.push('d')).toEqual({ text: 'abd', stop: null });
    expect(checker.push('a')).toEqual({ text: '', stop: null });
    expect(checker.flush()).toBe('a');
  });

  it('reports the earliest stop string when several match', () => {
    const checker = new StopChecker(['world', 'lo w']);
    expect(checker.push('hello world')).toEqual({ text: 'hel', stop: 'lo w' });
  });

  it('passes text straight through without stop strings', () => {
    const checker = new StopChecker([]);
    expect(checker.push('anything')).toEqual({ text: 'anything', stop: null });
    expect(checker.flush()).toBe('');
  });
});
