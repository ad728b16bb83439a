import type { BackendOptions, ForwardBatch, KvCacheSpec, StepOutput } from '../../src/engine/backend.js';
import type { LlamaConfig } from '../../src/model/config.js';
import type { LlamaGraph } from '../../src/model/graph.js';
import type { TensorInfo } from '../../src/model/weights.js';

/** What the main thread sends a rank's thread. */
export type ToRank =
  /** One of the rank's weight slices, sent before `load`; the rank keeps the bytes until its backend reads them. */
  | { type: 'tensor'; info: TensorInfo; bytes: Uint8Array }
  | { type: 'load'; config: LlamaConfig; graph: LlamaGraph; random: boolean }
  | { type: 'allocate'; spec: KvCacheSpec }
  | { type: 'forward'; batch: ForwardBatch; data: SharedArrayBuffer }
  | { type: 'close' };

export type FromRank =
  /** `description`: the rank backend's, after load. */
  | { type: 'done'; output?: StepOutput | null; description?: string }
  | { type: 'error'; message: string };

/** The backends a rank can be. */
export type RankBackendName = 'ref' | 'cpu';

export interface RankInit {
  rank: number;
  tpSize: number;
  backend: RankBackendName;
  /** The rank backend's settings (cpu: its thread count and weight format). */
  options: BackendOptions;
  control: SharedArrayBuffer;
}
