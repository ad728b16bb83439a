import { describe, expect, it } from 'vitest';
import { DeltaStream, type DeltaListener } from '../../src/engine/delta-stream.js';
import type { GenerateDelta } from '../../src/engine/types.js';

const delta = (text: string): GenerateDelta => ({ requestId: 'r', index: 0, text, tokenIds: [text.length], logprobs: null, finishReason: null, matchedStop: null, usage: null });

/** A listener that records what it got, in order. */
function recorder(onDelta?: (d: GenerateDelta) => void): DeltaListener & { got: string[] } {
  const got: string[] = [];
  return {
    got,
    delta: (d) => {
      got.push(d.text);
      onDelta?.(d);
    },
    end: () => got.push('<end>'),
    fail: (e) => got.push(`<fail ${e.message}>`),
  };
}

describe('DeltaStream.listen', () => {
  it('hands queued deltas at once, then each push synchronously, then the end', () => {
    const stream = new DeltaStream(() => {});
    stream.push(delta('a'));
    stream.push(delta('b'));
    const listener = recorder();
    stream.listen(listener);
    expect(listener.got).toEqual(['a', 'b']);
    stream.push(delta('c'));
    expect(listener.got).toEqual(['a', 'b', 'c']);
    stream.end();
    expect(listener.got).toEqual(['a', 'b', 'c', '<end>']);
  });

  it('after unlisten (even from inside a delta) deltas queue, and the next listen() gets them in order', () => {
    const stream = new DeltaStream(() => {});
    const first = recorder((d) => d.text === 'b' && stream.unlisten());
    stream.push(delta('a'));
    stream.push(delta('b'));
    stream.listen(first);
    stream.push(delta('c'));
    stream.push(delta('d'));
    stream.end();
    expect(first.got).toEqual(['a', 'b']);
    const second = recorder();
    stream.listen(second);
    expect(second.got).toEqual(['c', 'd', '<end>']);
  });

  it('a failure reaches the listener after the deltas before it, once', () => {
    const stream = new DeltaStream(() => {});
    stream.push(delta('a'));
    stream.fail(new Error('device lost'));
    const listener = recorder();
    stream.listen(listener);
    stream.end();
    expect(listener.got).toEqual(['a', '<fail device lost>']);
  });

  it('the async iterator still works when nobody listens', async () => {
    const stream = new DeltaStream(() => {});
    stream.push(delta('a'));
    stream.end();
    const texts: string[] = [];
    for await (const d of stream) texts.push(d.text);
    expect(texts).toEqual(['a']);
  });
});
