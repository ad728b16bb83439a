import { bytesPerElement } from './dtype.js';
import type { TensorSlice } from './shard.js';
import type { DeviceWeightRecipe, DeviceWindowRecipe, TensorInfo, WeightSource } from './weights.js';

/**
 * One tensor-parallel rank's view of a checkpoint: tensors with a slice (src/model/shard.ts)
 * have the slice's shape and bytes, read from the source range by range so the rank never
 * reads or holds the rest; other tensors pass through whole.
 */
export class ShardedWeights implements WeightSource {
  readonly random: boolean;
  readonly description: string;

  constructor(
    private readonly source: WeightSource,
    private readonly slices: ReadonlyMap<string, TensorSlice>,
    rank: number,
  ) {
    this.random = source.random;
    this.description = `${source.description}, rank ${rank}'s shard`;
  }

  info(name: string): TensorInfo | undefined {
    const info = this.source.info(name);
    const slice = this.slices.get(name);
    if (!info || !slice) return info;
    const shape = [...info.shape];
    shape[slice.dim] = slice.end - slice.start;
    return { ...info, shape };
  }

  locate(name: string): string | undefined {
    return this.source.locate?.(name);
  }

  /** A device generator would produce the whole tensor: sliced tensors are read. */
  deviceRecipe(name: string): DeviceWeightRecipe | null {
    return this.slices.has(name) ? null : (this.source.deviceRecipe?.(name) ?? null);
  }

  /** A sliced tensor of a device-generated source: the source's recipe and this rank's window of it. */
  deviceWindowRecipe(name: string): DeviceWindowRecipe | null {
    const slice = this.slices.get(name);
    const recipe = slice ? (this.source.deviceRecipe?.(name) ?? null) : null;
    if (!slice || !recipe) return null;
    const shape = this.source.info(name)!.shape;
    return { recipe, sourceCols: shape[1]!, rowStart: slice.dim === 0 ? slice.start : 0, colStart: slice.dim === 1 ? slice.start : 0 };
  }

  async read(name: string): Promise<Uint8Array> {
    const slice = this.slices.get(name);
    if (!slice) return this.source.read(name);
    const info = this.source.info(name)!;
    const size = bytesPerElement[info.dtype];
    const [rows, cols] = info.shape as [number, number];
    if (slice.dim === 0) return this.range(name, slice.start * cols * size, (slice.end - slice.start) * cols * size);
    // A column band: one range per row, gathered into the slice's row-major layout.
    const width = (slice.end - slice.start) * size;
    const out = new Uint8Array(rows * width);
    for (let r = 0; r < rows; r++) out.set(await this.range(name, (r * cols + slice.start) * size, width), r * width);
    return out;
  }

  private async range(name: string, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    if (this.source.readRange) return this.source.readRange(name, byteOffset, byteLength);
    return (await this.source.read(name)).slice(byteOffset, byteOffset + byteLength);
  }

  /** The source is shared by every rank: its owner closes it. */
  async close(): Promise<void> {}
}
