import { Presets, SingleBar } from 'cli-progress';
import type { LlamaGraph } from '../../src/model/graph.js';
import { storedBytes, type WeightFormat } from './linear-weights.js';

/** A terminal progress bar over the MiB of blocks a quantized load makes (the embedding table included). */
export function loadProgress(graph: LlamaGraph, format: WeightFormat): SingleBar | null {
  if (format === 'f32') return null;
  const embedding = graph.ops.find((op) => op.op === 'embedding')!;
  const table = graph.activations[embedding.out]!.cols;
  let total = 0;
  for (const op of graph.ops) if (op.op === 'linear') total += storedBytes(graph.activations[op.out]!.cols, graph.activations[op.x]!.cols, format);
  // A tied lm-head reuses the table's blocks; an untied one is a linear op of its own.
  const tied = graph.ops.some((op) => op.op === 'linear' && op.weight === embedding.table);
  const lmHead = graph.ops.findLast((op) => op.op === 'linear');
  if (!tied && lmHead?.op === 'linear') total += storedBytes(graph.activations[lmHead.out]!.cols, table, format);
  const bar = new SingleBar(
    { format: `cpu: quantizing weights to ${format} [{bar}] {percentage}% | {value}/{total} MiB | {duration}s`, stream: process.stderr, clearOnComplete: false, hideCursor: false, formatValue: (v, _o, type) => (type === 'value' || type === 'total' ? Math.round(v).toString() : String(v)) },
    Presets.shades_classic,
  );
  bar.start(Math.round(total / 2 ** 20), 0);
  return bar;
}
