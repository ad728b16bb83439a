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
export type AttributeValue = number | number[] | { float: number };

/**
 * A small writer for ONNX graphs: nodes, initializers and typed inputs/outputs, encoded with
 * onnx-proto. Names passed to `node` are returned so graph code reads as data flow.
 */
export class OnnxGraphBuilder {
  private readonly nodes: NodeProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private counter = 0;

  input(name: string, type: number, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  output(name: string, type: number, dims: Dim[]): void {
    this.outputs.push(valueInfo(name, type, dims));
  }

  initializer(name: string, type: number, dims: number[], data: ArrayBufferView): string {
    const rawData = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.initializers.push({ name, dataType: type, dims, rawData });
    return name;
  }

  int64s(values: number[]): string {
    return this.initializer(this.fresh('const'), DataType.INT64, [values.length], BigInt64Array.from(values, BigInt));
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

  encode(): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'sluice',
      opsetImport: [
        { domain: '', version: 17 },
        { domain: 'com.microsoft', version: 1 },
      ],
      graph: { name: 'sluice', node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs },
    });
    return onnx.ModelProto.encode(model).finish();
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
  if (typeof value === 'object') return { name, type: Type.FLOAT, f: value.float };
  return { name, type: Type.INT, i: value };
}
