import { parentPort, workerData } from 'node:worker_threads';
import type { Backend } from '../../src/engine/backend.js';
import type { TensorInfo, WeightSource } from '../../src/model/weights.js';
import { SharedMemoryCollectives } from './collectives.js';
import type { FromRank, RankInit, ToRank } from './protocol.js';

/** One tensor-parallel rank: a backend over its shard, driven step by step by the main thread. */
const init = workerData as RankInit;
const collectives = new SharedMemoryCollectives(init.rank, init.tpSize, init.control);
const backend = await rankBackend();
/** The shard's tensors; a tensor's bytes are dropped once the backend has read them, its info kept. */
const infos = new Map<string, TensorInfo>();
const tensors = new Map<string, Uint8Array>();
const port = parentPort!;

async function handle(message: ToRank): Promise<FromRank> {
  switch (message.type) {
    case 'tensor':
      infos.set(message.info.name, message.info);
      tensors.set(message.info.name, message.bytes);
      return { type: 'done' };
    case 'load': {
      const weights: WeightSource = {
        description: `rank ${init.rank}'s shard`,
        random: message.random,
        info: (name) => infos.get(name),
        read: async (name) => {
          const bytes = tensors.get(name);
          if (!bytes) throw new Error(`rank ${init.rank}: no tensor ${name}${infos.has(name) ? ' (already read once)' : ''}`);
          tensors.delete(name);
          return bytes;
        },
        close: async () => {},
      };
      await backend.load({ config: message.config, graph: message.graph, weights });
      return { type: 'done', description: backend.description };
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

async function rankBackend(): Promise<Backend> {
  switch (init.backend) {
    case 'ref': {
      const { RefBackend } = await import('../ref/ref-backend.js');
      return new RefBackend({ collectives });
    }
    case 'cpu': {
      const { create } = await import('../cpu/index.js');
      return create({ ...init.options, collectives });
    }
  }
}

port.on('message', (message: ToRank) => {
  handle(message).then(
    (reply) => port.postMessage(reply),
    (e: unknown) => port.postMessage({ type: 'error', message: e instanceof Error ? e.message : String(e) } satisfies FromRank),
  );
});
