import { parentPort } from 'node:worker_threads';
import { GrammarCompiler } from './grammar-compiler.js';
import type { MaskReply, MaskRequest } from './mask-protocol.js';
import type { TokenMatcher } from './token-matcher.js';

/**
 * The mask worker: a copy of every constrained sequence's matcher, in its own xgrammar instance,
 * computing the step's token masks into shared memory while the engine's thread is busy with
 * the backend (onnxruntime's run blocks the thread that calls it). Requests run one at a time,
 * in the order sent, so each copy sees its matcher's changes in order.
 */
const port = parentPort!;
let compiler: GrammarCompiler | null = null;
const matchers = new Map<number, TokenMatcher>();
let queue = Promise.resolve();

port.on('message', (request: MaskRequest) => {
  queue = queue.then(async () => {
    const reply: MaskReply = { call: request.call };
    try {
      reply.value = await handle(request);
    } catch (e) {
      reply.error = e instanceof Error ? e.message : String(e);
    }
    if (request.op !== 'drop') port.postMessage(reply);
  });
});

async function handle(request: MaskRequest): Promise<number | undefined> {
  switch (request.op) {
    case 'init':
      compiler = await GrammarCompiler.fromVocabulary(request.vocab, request.stopTokenIds);
      return;
    case 'add': {
      const compiled = await compiler!.compile(request.spec);
      matchers.set(request.id, await compiler!.matcher(compiled, request.stopTokenIds));
      return;
    }
    case 'drop':
      matchers.get(request.id)?.dispose();
      matchers.delete(request.id);
      return;
    case 'fill': {
      const start = performance.now();
      const bits = new Int32Array(request.buffer);
      const diverged: number[] = [];
      for (const { id, journal, row } of request.rows) {
        const matcher = matchers.get(id);
        if (matcher && matcher.replay(journal)) await matcher.fillMask(bits, row * request.words);
        else {
          bits.fill(-1, row * request.words, (row + 1) * request.words);
          diverged.push(id);
        }
      }
      if (diverged.length > 0) throw new Error(`the worker's copies of matchers ${diverged.join(', ')} are not in step`);
      return performance.now() - start;
    }
  }
}
