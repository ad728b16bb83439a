import type { ForwardBatch } from '../../src/engine/backend.js';
import type { AttentionGroupName } from './segment-graph.js';

/** Additive mask value: large enough to zero a probability, finite so a fully masked padding row stays NaN-free. */
const masked = -1e30;

/**
 * One attention group's gathered layout, for S sequences padded to Q new tokens and P past
 * positions. Keys of sequence i are its P past cache slots followed by its Q new tokens.
 * - queryIndex [S, Q]: the flat token index of each new token (padding repeats the last one);
 * - pastIndex [S, P]: the KV slot of each past position (padding points at slot 0);
 * - mask [1, S, G*Q, P+Q]: 0 where query j may attend to the key, else a large negative; it is
 *   repeated for the G query heads that share a KV head;
 * - keySplit [P, Q]: where the past keys end in a score row.
 */
export interface GroupPlan {
  numSeqs: number;
  queryLen: number;
  pastLen: number;
  queryIndex: Int32Array;
  pastIndex: Int32Array;
  mask: Float32Array;
  keySplit: BigInt64Array;
}

export interface AttentionPlan {
  groups: Record<AttentionGroupName, GroupPlan>;
  /** [T]: the row of each token in the concatenation of the groups' [S*Q] outputs. */
  outIndex: Int32Array;
}

export function planAttention(batch: ForwardBatch, pageSize: number, queryHeadsPerKvHead: number): AttentionPlan {
  const numSeqs = batch.kvLens.length;
  const members: Record<AttentionGroupName, number[]> = { d: [], p: [] };
  for (let s = 0; s < numSeqs; s++) {
    (batch.queryStart[s + 1]! - batch.queryStart[s]! === 1 ? members.d : members.p).push(s);
  }
  const outIndex = new Int32Array(batch.tokenIds.length);
  let rowBase = 0;
  const groups = {} as Record<AttentionGroupName, GroupPlan>;
  for (const name of ['d', 'p'] as const) {
    const plan = planGroup(batch, members[name], pageSize, queryHeadsPerKvHead);
    members[name].forEach((s, i) => {
      for (let t = batch.queryStart[s]!; t < batch.queryStart[s + 1]!; t++) {
        outIndex[t] = rowBase + i * plan.queryLen + (t - batch.queryStart[s]!);
      }
    });
    rowBase += plan.numSeqs * plan.queryLen;
    groups[name] = plan;
  }
  return { groups, outIndex };
}

/** An empty group becomes one fully masked dummy row so no tensor has a zero dimension. */
function planGroup(batch: ForwardBatch, seqs: number[], pageSize: number, g: number): GroupPlan {
  const numSeqs = Math.max(1, seqs.length);
  let queryLen = 1;
  let pastLen = 1;
  for (const s of seqs) {
    const n = batch.queryStart[s + 1]! - batch.queryStart[s]!;
    queryLen = Math.max(queryLen, n);
    pastLen = Math.max(pastLen, batch.kvLens[s]! - n);
  }
  const keys = pastLen + queryLen;
  const queryIndex = new Int32Array(numSeqs * queryLen);
  const pastIndex = new Int32Array(numSeqs * pastLen);
  const mask = new Float32Array(numSeqs * g * queryLen * keys).fill(masked);
  seqs.forEach((s, i) => {
    const first = batch.queryStart[s]!;
    const n = batch.queryStart[s + 1]! - first;
    const past = batch.kvLens[s]! - n;
    for (let j = 0; j < queryLen; j++) queryIndex[i * queryLen + j] = first + Math.min(j, n - 1);
    const pages = batch.pageTableStart[s]!;
    for (let p = 0; p < past; p++) {
      pastIndex[i * pastLen + p] = batch.pageTable[pages + Math.floor(p / pageSize)]! * pageSize + (p % pageSize);
    }
    for (let j = 0; j < n; j++) {
      const row = mask.subarray((i * g * queryLen + j) * keys, (i * g * queryLen + j + 1) * keys);
      row.fill(0, 0, past);
      row.fill(0, pastLen, pastLen + j + 1);
    }
    // The G heads of a KV head see the same mask: copy the first head's block.
    const block = queryLen * keys;
    const base = i * g * block;
    for (let head = 1; head < g; head++) mask.copyWithin(base + head * block, base, base + block);
  });
  return { numSeqs, queryLen, pastLen, queryIndex, pastIndex, mask, keySplit: BigInt64Array.of(BigInt(pastLen), BigInt(queryLen)) };
}
