import { BackendError, UserError } from '../errors.js';
import type { ForwardBatch } from './backend.js';

/** What a batch is checked against: the model's vocabulary and the KV cache the backend allocated. */
export interface BatchLimits {
  vocabSize: number;
  numPages: number;
  pageSize: number;
}

/**
 * Checks a step's batch before a backend runs it, so a bad one fails with one message on every
 * backend instead of reading out of bounds. A token outside the vocabulary is a UserError (it
 * came from a request); the rest are BackendErrors (the engine built a wrong batch). Messages
 * start with the backend's name and name the offending field.
 */
export function validateForwardBatch(backend: string, batch: ForwardBatch, limits: BatchLimits): void {
  const fail = (message: string) => new BackendError(backend, `ForwardBatch ${message}`);
  const numTokens = batch.tokenIds.length;
  const numSeqs = batch.kvLens.length;
  const numSlots = limits.numPages * limits.pageSize;
  if (batch.positions.length !== numTokens || batch.slotMapping.length !== numTokens) {
    throw fail('positions and slotMapping must have one entry per token');
  }
  if (batch.queryStart.length !== numSeqs + 1 || batch.pageTableStart.length !== numSeqs + 1) {
    throw fail('queryStart and pageTableStart must have S + 1 entries');
  }
  if (batch.queryStart[0] !== 0 || batch.queryStart[numSeqs] !== numTokens) throw fail('queryStart must run from 0 to the token count');
  if (batch.pageTableStart[0] !== 0 || batch.pageTableStart[numSeqs]! > batch.pageTable.length) {
    throw fail('pageTableStart must run from 0 to at most the page table length');
  }
  // Indexed loops with an unsigned compare (negatives wrap above any limit): the page table of a
  // large decode batch has 10^5 entries, and this runs every step.
  const tokenIds = batch.tokenIds;
  const previousRow = batch.previousRow;
  if (previousRow && previousRow.length !== numTokens) throw fail('previousRow must have one entry per token');
  for (let i = 0; i < tokenIds.length; i++) {
    if (previousRow && previousRow[i]! >= 0) continue; // the token the previous step sampled, on the device
    if (tokenIds[i]! >>> 0 >= limits.vocabSize) throw new UserError(`${backend}: token id ${tokenIds[i]} is outside the vocabulary (0..${limits.vocabSize - 1})`);
  }
  const slots = batch.slotMapping;
  for (let i = 0; i < slots.length; i++) {
    if (slots[i]! >>> 0 >= numSlots) throw fail(`slotMapping: KV slot ${slots[i]} is outside the cache (${numSlots} slots)`);
  }
  const pageTable = batch.pageTable;
  for (let i = 0; i < pageTable.length; i++) {
    if (pageTable[i]! >>> 0 >= limits.numPages) throw fail(`pageTable: page ${pageTable[i]} is outside the cache (${limits.numPages} pages)`);
  }
  const penalized = batch.sampling.penalties?.tokenIds ?? new Int32Array(0);
  for (let i = 0; i < penalized.length; i++) {
    if (penalized[i]! >>> 0 >= limits.vocabSize) throw fail(`penalties: token id ${penalized[i]} is outside the vocabulary (0..${limits.vocabSize - 1})`);
  }
  const bias = batch.sampling.logitBias;
  if (bias) {
    if (bias.rowStart.length !== numSeqs + 1 || bias.rowStart[0] !== 0 || bias.rowStart[numSeqs] !== bias.tokenIds.length || bias.bias.length !== bias.tokenIds.length) {
      throw fail('logitBias: rowStart must have S + 1 entries running from 0 to the entry count, one bias per entry');
    }
    for (let i = 0; i < bias.tokenIds.length; i++) {
      if (bias.tokenIds[i]! >>> 0 >= limits.vocabSize) throw fail(`logitBias: token id ${bias.tokenIds[i]} is outside the vocabulary (0..${limits.vocabSize - 1})`);
    }
  }
  for (let s = 0; s < numSeqs; s++) {
    const newTokens = batch.queryStart[s + 1]! - batch.queryStart[s]!;
    const kvLen = batch.kvLens[s]!;
    if (newTokens < 1 || kvLen < newTokens) throw fail(`sequence ${s} has ${newTokens} new tokens and a KV length of ${kvLen}`);
    const pages = batch.pageTableStart[s + 1]! - batch.pageTableStart[s]!;
    if (pages * limits.pageSize < kvLen) throw fail(`sequence ${s} has ${pages} pages for a KV length of ${kvLen}`);
  }
}
