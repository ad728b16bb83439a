import { describe, expect, it } from 'vitest';
import { ContextLengthError, EngineDeadError, InvalidRequestError } from '../../src/engine/errors.js';
import type { GenerateDelta } from '../../src/engine/types.js';
import { DeltaBatchWriter, deserializeError, readDelta, serializeError } from '../../src/engine/worker/protocol.js';
import { UserError } from '../../src/errors.js';

const delta = (over: Partial<GenerateDelta>): GenerateDelta => ({
  requestId: 'r',
  index: 0,
  text: '',
  tokenIds: [],
  logprobs: null,
  finishReason: null,
  matchedStop: null,
  usage: null,
  ...over,
});

describe('engine-thread protocol', () => {
  it('a step batch gives back every delta as it went in, ends and failures after them', () => {
    const writer = new DeltaBatchWriter();
    const deltas: [number, GenerateDelta][] = [
      [7, delta({ requestId: 'a', text: 'héllo 🙂', tokenIds: [11, 12] })],
      [9, delta({ requestId: 'b', index: 2, text: '', tokenIds: [] })],
      [7, delta({ requestId: 'a', text: ' end', tokenIds: [13], finishReason: 'stop', matchedStop: '###', usage: { promptTokens: 4, completionTokens: 3, cachedTokens: 1 } })],
      [9, delta({ requestId: 'b', index: 2, text: 'x', tokenIds: [5], logprobs: [{ tokenId: 5, logprob: -0.5, top: [{ tokenId: 5, logprob: -0.5 }] }], finishReason: 'length', timing: { arrival: 1, scheduled: 2, firstToken: 3 } })],
    ];
    for (const [handle, d] of deltas) writer.add(handle, d);
    writer.end(7);
    writer.fail(9, new EngineDeadError('the backend failed: device lost'));
    expect(writer.empty).toBe(false);
    const { batch, transfer } = writer.build();
    expect(writer.empty).toBe(true);
    expect(transfer.length).toBe(6);
    expect(batch.count).toBe(4);
    deltas.forEach(([handle, d], i) => {
      expect(batch.handles[i]).toBe(handle);
      expect(readDelta(batch, i, d.requestId)).toEqual(d);
    });
    expect(batch.ended).toEqual([7]);
    expect(batch.failed.map(([h]) => h)).toEqual([9]);
  });

  it('errors come back as the nearest known class with their fields', () => {
    const classes = [ContextLengthError, InvalidRequestError, EngineDeadError, UserError];
    const tooLong = deserializeError(serializeError(new ContextLengthError(100, 90, 20)), classes);
    expect(tooLong).toBeInstanceOf(ContextLengthError);
    expect(tooLong).toBeInstanceOf(InvalidRequestError);
    expect((tooLong as ContextLengthError).param).toBe('prompt');
    expect(tooLong.message).toMatch(/maximum context length is 100 tokens/);
    const bad = new InvalidRequestError('top_p must be in (0, 1]', 'top_p');
    bad.requestIndex = 1;
    const revived = deserializeError(serializeError(bad), classes) as InvalidRequestError;
    expect([revived.name, revived.param, revived.requestIndex]).toEqual(['InvalidRequestError', 'top_p', 1]);
    class GrammarError extends UserError {}
    const unknownSubclass = deserializeError(serializeError(new GrammarError('bad schema')), classes);
    expect(unknownSubclass).toBeInstanceOf(UserError);
    expect(unknownSubclass.message).toBe('bad schema');
    expect(deserializeError(serializeError('plain text'), classes).message).toBe('plain text');
  });
});
