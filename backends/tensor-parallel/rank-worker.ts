import { parentPort, workerData } from 'node:worker_threads';
import { RefBackend } from '../ref/ref-backend.js';
import type { TensorInfo, WeightSource } from '../../src/model/weights.js';
import { SharedMemoryCollectives } from './collectives.js';
import type { FromRank, RankInit, ToRank } from './protocol.js';

/** One tensor-parallel rank: a backend over its shard, driven step by step by the main thread. */
const init = workerData as RankInit;
const collectives = new SharedMemoryCollectives(init.rank, init.tpSize, init.control);
const backend = new RefBackend({ collectives });
const tensors = new Map<string, { info: TensorInfo; bytes: Uint8Array }>();
const port = parentPort!;

async function handle(message: ToRank): Promise<FromRank> {
  switch (message.type) {
    case 'tensor':
      tensors.set(message.info.name, message);
      return { type: 'done' };
    case 'load': {
      const weights: WeightSource = {
        description: `rank ${init.rank}'s shard`,
        random: message.random,
        info: (name) => tensors.get(name)?.info,
        read: async (name) => {
          const t = tensors.get(name);
          if (!t) throw new Error(`rank ${init.rank}: no tensor ${name}`);
          tensors.delete(name);
          return t.bytes;
        },
        close: async () => {},
      };
      await backend.load({ config: message.config, graph: message.graph, weights });
      return { type: 'done' };
    }
    case 'allocate':
      await backend.allocateKvCache(message.spec);
      return { type: 'done' };
    case 'forward': {
      collectives.useData(message.data);
      const output = await backend.forward(message.batch);
      return { type: 'done', output: init.rank === 0 ? output : null };
    }
    case 'close':
      await backend.close();
      return { type: 'done' };
  }
}

port.on('message', (message: ToRank) => {
  handle(message).then(
    (reply) => port.postMessage(reply),
    (e: unknown) => port.postMessage({ type: 'error', message: e instanceof Error ? e.message : String(e) } satisfies FromRank),
  );
});
