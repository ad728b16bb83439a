import type { GrammarSpec } from '../engine/types.js';
import type { GrammarVocabulary } from './tokenizer-info.js';

/** One row of a fill: the matcher, its changes since the last fill, and where its mask goes. */
export interface FillRow {
  id: number;
  journal: number[];
  row: number;
}

/** What the engine's thread asks of the mask worker; every request but `drop` is answered with its `call`. */
export type MaskRequest =
  | { call: number; op: 'init'; vocab: GrammarVocabulary; stopTokenIds: number[] }
  | { call: number; op: 'add'; id: number; spec: GrammarSpec; stopTokenIds: number[] }
  | { call: number; op: 'fill'; buffer: SharedArrayBuffer; words: number; rows: FillRow[] }
  | { call: number; op: 'drop'; id: number };

/** The answer to a request: `value` is the fill's compute time in ms; `error` says why it failed. */
export interface MaskReply {
  call: number;
  value?: number;
  error?: string;
}
