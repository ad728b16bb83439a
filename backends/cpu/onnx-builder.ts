import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';

// onnx-proto is CommonJS: Node's ESM loader only exposes it as the default export.
const { onnx } = onnxProto as unknown as { onnx: typeof OnnxTypes };
type NodeProto = OnnxTypes.INodeProto;
type TensorProto = OnnxTypes.ITensorProto;
type ValueInfoProto = OnnxTypes.IValueInfoProto;
type AttributeProto = OnnxTypes.IAttributeProto;

export const DataType = onnx.TensorProto.DataType;
export type Dim = number | string;
export type AttributeValue = number | number[] | string | { float: number };

/**
 * An in-memory "file" that initializers point into (ONNX external data): ORT reads the weights
 * from it (SessionOptions.externalData) instead of from a serialized copy in the model bytes.
 */
export interface ExternalFile {
  path: string;
  data: Uint8Array;
}

/** A model as ORT takes it: the graph's protobuf bytes and the buffers its large initializers live in. */
export interface EncodedModel {
  bytes: Uint8Array;
  externalData: ExternalFile[];
}

/** Initializers at least this large are left in their own buffers as external data; smaller ones are serialized inline. */
export const externalInitializerBytes = 64 * 1024;

/**
 * A small writer for ONNX graphs: nodes, initializers and typed inputs/outputs, encoded with
 * onnx-proto. Names passed to `node` are returned so graph code reads as data flow.
 */
export class OnnxGraphBuilder {
  private readonly nodes: NodeProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  /** One external file per ArrayBuffer that large initializers are views of (several can share one). */
  private readonly files = new Map<ArrayBufferLike, ExternalFile>();
  private counter = 0;

  input(name: string, type: number, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  output(name: string, type: number, dims: Dim[]): void {
    this.outputs.push(valueInfo(name, type, dims));
  }

  /**
   * Adds a constant. A large one stays where it is: the tensor names its buffer and the byte
   * range (ONNX external data), so the weights are never copied into the protobuf bytes.
   */
  initializer(name: string, type: number, dims: number[], data: ArrayBufferView): string {
    if (data.byteLength < externalInitializerBytes) {
      const rawData = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      this.initializers.push({ name, dataType: type, dims, rawData });
      return name;
    }
    let file = this.files.get(data.buffer);
    if (!file) {
      file = { path: `weights_${this.files.size}.bin`, data: new Uint8Array(data.buffer) };
      this.files.set(data.buffer, file);
    }
    const externalData = [
      { key: 'location', value: file.path },
      { key: 'offset', value: String(data.byteOffset) },
      { key: 'length', value: String(data.byteLength) },
    ];
    this.initializers.push({ name, dataType: type, dims, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL, externalData });
    return name;
  }

  int64s(values: number[]): string {
    return this.initializer(this.fresh('const'), DataType.INT64, [values.length], BigInt64Array.from(values, BigInt));
  }

  uint8s(values: number[]): string {
    return this.initializer(this.fresh('const'), DataType.UINT8, [values.length], Uint8Array.from(values));
  }

  floats(values: number[]): string {
    return this.initializer(this.fresh('const'), DataType.FLOAT, [values.length], Float32Array.from(values));
  }

  /** Adds a node and returns its output names (fresh ones unless `outputs` names them). */
  node(opType: string, inputs: string[], attributes: Record<string, AttributeValue> = {}, outputs: number | string[] = 1, domain = ''): string[] {
    const outNames = typeof outputs === 'number' ? Array.from({ length: outputs }, () => this.fresh(opType)) : outputs;
    this.nodes.push({
      // Named after its first output: ORT's profiles and errors then say which node.
      name: outNames[0],
      opType,
      domain,
      input: inputs,
      output: outNames,
      attribute: Object.entries(attributes).map(([name, v]) => attribute(name, v)),
    });
    return outNames;
  }

  /** One-output node. */
  op(opType: string, inputs: string[], attributes: Record<string, AttributeValue> = {}, domain = ''): string {
    return this.node(opType, inputs, attributes, 1, domain)[0]!;
  }

  encode(): EncodedModel {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'sluice',
      opsetImport: [
        { domain: '', version: 17 },
        { domain: 'com.microsoft', version: 1 },
      ],
      graph: { name: 'sluice', node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs },
    });
    return { bytes: onnx.ModelProto.encode(model).finish(), externalData: [...this.files.values()] };
  }

  private fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }
}

function valueInfo(name: string, type: number, dims: Dim[]): ValueInfoProto {
  const dim = dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }));
  return { name, type: { tensorType: { elemType: type, shape: { dim } } } };
}

function attribute(name: string, value: AttributeValue): AttributeProto {
  const Type = onnx.AttributeProto.AttributeType;
  if (Array.isArray(value)) return { name, type: Type.INTS, ints: value };
  if (typeof value === 'string') return { name, type: Type.STRING, s: new TextEncoder().encode(value) };
  if (typeof value === 'object') return { name, type: Type.FLOAT, f: value.float };
  return { name, type: Type.INT, i: value };
}
