/**
 * The GGML tensor types sluice reads, with their block layout. A quantized row of n elements
 * is n / blockSize blocks of blockBytes each, blocks running along the contiguous dimension.
 */
export type GgmlTypeName = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q4_K' | 'Q6_K';

export interface GgmlTypeInfo {
  name: GgmlTypeName;
  /** Elements per block (1 for the float types). */
  blockSize: number;
  blockBytes: number;
}

/** GGML type ids as they appear in a GGUF tensor header (ggml.h's enum ggml_type). */
export const ggmlTypes: ReadonlyMap<number, GgmlTypeInfo> = new Map([
  [0, { name: 'F32', blockSize: 1, blockBytes: 4 }],
  [1, { name: 'F16', blockSize: 1, blockBytes: 2 }],
  [2, { name: 'Q4_0', blockSize: 32, blockBytes: 18 }],
  [8, { name: 'Q8_0', blockSize: 32, blockBytes: 34 }],
  [12, { name: 'Q4_K', blockSize: 256, blockBytes: 144 }],
  [14, { name: 'Q6_K', blockSize: 256, blockBytes: 210 }],
  [30, { name: 'BF16', blockSize: 1, blockBytes: 2 }],
]);

/** Names of every GGML type id, for errors about types sluice does not read. */
export const ggmlTypeNames: Record<number, string> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K',
  12: 'Q4_K', 13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S',
  20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64',
  29: 'IQ1_M', 30: 'BF16', 34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4',
};

export const supportedGgmlTypes = [...ggmlTypes.values()].map((t) => t.name).join(', ');

/** Bytes of `elements` elements (a whole number of blocks). */
export function ggmlBytes(type: GgmlTypeInfo, elements: number): number {
  return (elements / type.blockSize) * type.blockBytes;
}
