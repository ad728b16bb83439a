import { closeSync, openSync, readSync } from 'node:fs';
import type { LlamaConfig, WeightDType } from '../config.js';
import { fromFloat32 } from '../dtype.js';
import type { StoredBlocks, TensorInfo, WeightSource } from '../weights.js';
import { UserError } from '../../errors.js';
import { dequantize } from './dequantize.js';
import type { GgufModelFile, GgufTensor } from './gguf-file.js';
import type { GgmlTypeName } from './ggml-types.js';
import { ggufSettingTensors, ggufToHfName } from './tensor-names.js';

const floatTypes: Partial<Record<GgmlTypeName, WeightDType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };


interface Entry {
  tensor: GgufTensor;
  info: TensorInfo;
  /** Q and K: heads whose rows llama.cpp's converter permuted. */
  heads?: number;
}

/**
 * The tensors of a GGUF file under Hugging Face names and shapes. Float tensors come as stored;
 * quantized ones are dequantized to `dequantizeTo` (or handed over as blocks through
 * quantizedBlocks). Q and K rows are put back in Hugging Face's rotary order.
 */
export class GgufWeights implements WeightSource {
  readonly random = false;
  readonly description: string;
  private readonly entries = new Map<string, Entry>();
  private readonly fds = new Map<string, number>();

  constructor(
    private readonly model: GgufModelFile,
    private readonly config: LlamaConfig,
    readonly dequantizeTo: WeightDType,
  ) {
    this.description = model.path;
    for (const tensor of model.tensors.values()) {
      if (ggufSettingTensors.has(tensor.name)) continue;
      const name = ggufToHfName(tensor.name);
      if (name === null) throw new UserError(`${tensor.file}: unexpected tensor "${tensor.name}" for the llama architecture`);
      const dtype = floatTypes[tensor.type.name] ?? dequantizeTo;
      const heads = name.endsWith('q_proj.weight') ? config.numHeads : name.endsWith('k_proj.weight') ? config.numKvHeads : undefined;
      this.entries.set(name, { tensor, info: { name, dtype, shape: [...tensor.dims].reverse() }, heads });
    }
  }

  info(name: string): TensorInfo | undefined {
    return this.entries.get(name)?.info;
  }

  locate(name: string): string | undefined {
    return this.entries.get(name)?.tensor.file;
  }

  /** The GGML type a tensor is stored in. */
  storedType(name: string): GgmlTypeName | undefined {
    return this.entries.get(name)?.tensor.type.name;
  }

  async read(name: string): Promise<Uint8Array> {
    const entry = this.need(name);
    const raw = this.rowsInHfOrder(entry);
    const type = entry.tensor.type.name;
    if (floatTypes[type] !== undefined) return raw;
    const values = new Float32Array(entry.tensor.dims.reduce((a, b) => a * b, 1));
    dequantize(type, raw, values);
    return fromFloat32(values, this.dequantizeTo);
  }

  /** The stored blocks of a quantized tensor (Q8_0, Q4_0, ...), rows in Hugging Face order; null for float tensors. */
  async storedBlocks(name: string): Promise<StoredBlocks | null> {
    const entry = this.need(name);
    if (floatTypes[entry.tensor.type.name] !== undefined) return null;
    const [cols, rows] = entry.tensor.dims as [number, number];
    return { type: entry.tensor.type.name, shape: [rows, cols], bytes: this.rowsInHfOrder(entry) };
  }

  async close(): Promise<void> {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }

  private need(name: string): Entry {
    const entry = this.entries.get(name);
    if (!entry) throw new UserError(`${this.description}: tensor "${name}" is missing`);
    return entry;
  }

  private rowsInHfOrder(entry: Entry): Uint8Array {
    const raw = this.readBytes(entry.tensor);
    if (entry.heads === undefined) return raw;
    const rows = entry.tensor.dims[1]!;
    const rowBytes = raw.byteLength / rows;
    const headDim = this.config.headDim;
    if (rows !== entry.heads * headDim) {
      throw new UserError(`${entry.tensor.file}: tensor "${entry.tensor.name}" has ${rows} rows, not ${entry.heads} heads of ${headDim}`);
    }
    // llama.cpp's converter stored HF row h*hd + j*hd/2 + i as row h*hd + 2i + j.
    const out = new Uint8Array(raw.byteLength);
    const half = headDim / 2;
    for (let r = 0; r < rows; r++) {
      const h = Math.floor(r / headDim);
      const within = r % headDim;
      const stored = h * headDim + 2 * (within % half) + Math.floor(within / half);
      out.set(raw.subarray(stored * rowBytes, (stored + 1) * rowBytes), r * rowBytes);
    }
    return out;
  }

  private readBytes(t: GgufTensor): Uint8Array {
    let fd = this.fds.get(t.file);
    if (fd === undefined) {
      fd = openSync(t.file, 'r');
      this.fds.set(t.file, fd);
    }
    const out = new Uint8Array(t.bytes);
    let done = 0;
    while (done < out.length) {
      const n = readSync(fd, out, done, Math.min(out.length - done, 1 << 30), t.offset + done);
      if (n === 0) throw new UserError(`${t.file}: truncated while reading tensor "${t.name}"`);
      done += n;
    }
    return out;
  }
}
