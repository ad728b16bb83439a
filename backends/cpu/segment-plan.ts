import type { GraphOp, LlamaGraph } from '../../src/model/graph.js';
import { blockBytes } from './block-pool.js';
import { storedBytes, type WeightFormat } from './linear-weights.js';
import { runsOnHost, type HostPlacement, type Segment } from './segment-graph.js';

const gib = 2 ** 30;

/**
 * Weights per segment when the caller sets none: 1.25 GiB, or 0.625 GiB for a model of more
 * than 4 GiB of stored weights. A load's peak memory is the sessions made so far plus about
 * two segments (the shared block buffer, ORT's copy and prepacked copy of the segment being
 * made), so halving the segment took the 8B q8 peak from 12.36 to 11.77 GiB; it costs a big
 * model's decode ~3% (8B, 7 alternating samples: twice the session runs), which a small model,
 * far from any memory limit, need not pay (docs/performance.md, issue 15).
 */
export function defaultSegmentBytes(graph: LlamaGraph, format: WeightFormat): number {
  let total = 0;
  for (const op of graph.ops) if (op.op === 'linear') total += storedBytes(graph.activations[op.out]!.cols, graph.activations[op.x]!.cols, format);
  return total > 4 * gib ? 0.625 * gib : 1.25 * gib;
}

/**
 * Cuts the graph's ops into segments: never across an op that runs on the host (the embedding,
 * a rank's collectives), always before the head (gather_last and what follows), and within a
 * run of session ops at layer boundaries, so that no segment holds more than `maxBytes` of
 * stored weights (unless one layer alone does). A sample op right after a collective (a rank's
 * gathered logits) is left to the host too, as it is after the host's lm-head when `placement`
 * puts the linears on the host (segment-graph.ts's HostPlacement; `layers` leaves no segment).
 */
export function planSegments(graph: LlamaGraph, format: WeightFormat, maxBytes: number, placement: HostPlacement = 'collectives'): Segment[] {
  const { ops } = graph;
  /** Stored bytes of the linear ops in ops[from, to). */
  const linearBytes = (from: number, to: number) =>
    ops.slice(from, to).reduce((sum, op) => (op.op === 'linear' ? sum + storedBytes(graph.activations[op.out]!.cols, graph.activations[op.x]!.cols, format) : sum), 0);
  const attentionsBefore = (index: number) => ops.slice(0, index).filter((op) => op.op === 'attention').length;
  const segment = (startOp: number, endOp: number): Segment => ({
    startOp,
    endOp,
    firstLayer: attentionsBefore(startOp),
    endLayer: attentionsBefore(endOp),
    withHead: ops.slice(startOp, endOp).some((op) => op.op === 'sample'),
  });
  // The head (from gather_last) is a session of its own: it runs once per chunk of logits rows.
  const headStart = ops.findIndex((op) => op.op === 'gather_last');
  const runs = sessionRuns(ops, placement).flatMap(([from, to]): [number, number][] => (from < headStart && headStart < to ? [[from, headStart], [headStart, to]] : [[from, to]]));
  const segments: Segment[] = [];
  for (const [from, to] of runs) {
    const cuts = [...graph.layerStart.filter((start) => start > from && start < to), to];
    let first = from;
    let pieceStart = from;
    let bytes = 0;
    for (const cut of cuts) {
      const pieceBytes = linearBytes(pieceStart, cut);
      if (pieceStart > first && bytes + pieceBytes > maxBytes) {
        segments.push(segment(first, pieceStart));
        first = pieceStart;
        bytes = 0;
      }
      bytes += pieceBytes;
      pieceStart = cut;
    }
    segments.push(segment(first, to));
  }
  return segments;
}

/** The maximal runs [from, to) of ops between the ops that run on the host; a run of only a sample op after a host op stays on the host. */
function sessionRuns(ops: readonly GraphOp[], placement: HostPlacement): [number, number][] {
  const runs: [number, number][] = [];
  let start = 0;
  for (let i = 0; i <= ops.length; i++) {
    if (i < ops.length && !runsOnHost(ops[i]!, placement)) continue;
    if (i > start) runs.push([start, i]);
    start = i + 1;
  }
  const last = runs.at(-1);
  if (last && last[1] - last[0] === 1 && ops[last[0]]!.op === 'sample' && last[0] > 0 && runsOnHost(ops[last[0] - 1]!, placement)) runs.pop();
  return runs;
}

/** Codes and scales of the matrices a segment's linear ops make (a tied lm-head reuses the embedding's blocks). */
export function segmentBlockBytes(graph: LlamaGraph, segment: Segment, embeddingTable: string): number {
  let bytes = 0;
  for (const op of graph.ops.slice(segment.startOp, segment.endOp)) {
    if (op.op === 'linear' && op.weight !== embeddingTable) bytes += blockBytes(graph.activations[op.out]!.cols, graph.activations[op.x]!.cols);
  }
  return bytes;
}
