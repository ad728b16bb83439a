import { totalmem } from 'node:os';
import type { LlamaConfig } from '../model/config.js';
import { OptionError } from '../errors.js';
import type { KvBudget } from './backend.js';

/** Bytes of K and V for one token across all layers, at `bytesPerElement` per stored element. */
export function kvBytesPerToken(config: LlamaConfig, bytesPerElement: number): number {
  return 2 * config.numLayers * config.numKvHeads * config.headDim * bytesPerElement;
}

/** KV budget of host-memory backends (ref, cpu) when no pool size is given. */
export const hostKvBudgetBytes = Math.min(1 << 30, totalmem() / 16);
/** At most this many tokens in a host pool whatever the budget (the page bookkeeping is host memory too). */
export const hostKvMaxTokens = 1 << 20;

/** A host-memory backend's pool: maxTotalTokens when given, else hostKvBudgetBytes worth, at most hostKvMaxTokens. */
export function hostKvCapacity(bytesPerToken: number, budget: KvBudget): number {
  if (budget.maxTotalTokens !== null) return budget.maxTotalTokens;
  return Math.min(hostKvMaxTokens, Math.floor(hostKvBudgetBytes / bytesPerToken));
}

/** Device memory as a backend measures it after loading the weights. */
export interface DeviceMemory {
  totalBytes: number;
  freeBytes: number;
}

/**
 * A device backend's pool: maxTotalTokens when given, else what memFractionStatic of the device
 * leaves after the weights (SGLang's rule). Too little for one page is the user's to fix.
 */
export function deviceKvCapacity(memory: DeviceMemory, bytesPerToken: number, budget: KvBudget): number {
  if (budget.maxTotalTokens !== null) return budget.maxTotalTokens;
  const bytes = memory.freeBytes - memory.totalBytes * (1 - budget.memFractionStatic);
  const tokens = Math.floor(bytes / bytesPerToken);
  if (tokens < budget.minTokens) {
    const gib = (n: number) => `${(n / 2 ** 30).toFixed(1)} GiB`;
    throw new OptionError(
      'memFractionStatic',
      (name) =>
        `${name('memFractionStatic')} ${budget.memFractionStatic} leaves no device memory for the KV cache ` +
        `(${gib(memory.freeBytes)} free of ${gib(memory.totalBytes)} after the weights); raise it or give ${name('maxTotalTokens')}`,
    );
  }
  return tokens;
}

/**
 * Writes every page of a host KV pool once, so the process holds the pool's memory from the
 * start (as a device pool is held) instead of growing into it as the prefix cache fills pages
 * for the first time, which reads like a leak and can surprise an OOM killer hours later.
 */
export function touchPages(...pools: (ArrayBufferView & { fill(value: number): unknown } | null)[]): void {
  for (const pool of pools) pool?.fill(0);
}
