// Causal grouped-query attention of each new token over its sequence's paged KV cache, with an
// online softmax. One workgroup per (token, head, split): split j covers cache positions
// [j * splitSize, (j + 1) * splitSize). With one split the normalized output is written
// directly; otherwise each split writes (max, sum, unnormalized acc) for attention_combine.
//
// seqMeta (i32), packed by the host each step: tokenSeq[T] | queryStart[S + 1] | kvLens[S] | pageTableStart[S + 1]
const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const DIMS_PER_THREAD: u32 = MAX_HEAD_DIM / WG;
struct Params { numHeads: u32, numKvHeads: u32, headDim: u32, pageSize: u32, scale: f32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> kCache: array<f32>;
@group(0) @binding(4) var<storage, read> vCache: array<f32>;
@group(0) @binding(5) var<storage, read> seqMeta: array<i32>;
@group(0) @binding(6) var<storage, read> pageTable: array<i32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read_write> partials: array<f32>;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> scores: array<f32, WG>;
var<workgroup> slots: array<u32, WG>;

const NEG_BIG: f32 = -3.0e38;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let numSplits = step.numSplits;
  let numHeads = params.numHeads;
  let id = flatWorkgroup(wid, nwg);
  if (id >= step.numTokens * numHeads * numSplits) { return; }
  let split = id % numSplits;
  let h = (id / numSplits) % numHeads;
  let t = id / (numSplits * numHeads);
  let numTokens = step.numTokens;
  let numSeqs = step.numSeqs;
  let s = u32(seqMeta[t]);
  let first = seqMeta[numTokens + s];
  let count = seqMeta[numTokens + s + 1u] - first;
  let kvLen = seqMeta[numTokens + numSeqs + 1u + s];
  let tableStart = u32(seqMeta[numTokens + 2u * numSeqs + 1u + s]);
  let lastPosition = u32(kvLen - count + (i32(t) - first));
  let begin = split * step.splitSize;
  let end = min(begin + step.splitSize, lastPosition + 1u);

  let headDim = params.headDim;
  let kvCols = params.numKvHeads * headDim;
  let kvHeadBase = (h / (numHeads / params.numKvHeads)) * headDim;
  let qBase = (t * numHeads + h) * headDim;
  for (var d = lid; d < headDim; d += WG) { qs[d] = q[qBase + d]; }
  workgroupBarrier();

  var runningMax = NEG_BIG;
  var runningSum = 0.0;
  var acc: array<f32, DIMS_PER_THREAD>;
  for (var blockStart = begin; blockStart < end; blockStart += WG) {
    let p = blockStart + lid;
    var score = NEG_BIG;
    if (p < end) {
      let page = u32(pageTable[tableStart + p / params.pageSize]);
      let slot = page * params.pageSize + p % params.pageSize;
      slots[lid] = slot;
      let kBase = slot * kvCols + kvHeadBase;
      var dot = 0.0;
      for (var d = 0u; d < headDim; d++) { dot += qs[d] * kCache[kBase + d]; }
      score = dot * params.scale;
    }
    scores[lid] = score;
    workgroupBarrier();
    let n = min(WG, end - blockStart);
    var blockMax = NEG_BIG;
    for (var j = 0u; j < n; j++) { blockMax = max(blockMax, scores[j]); }
    let newMax = max(runningMax, blockMax);
    let correction = exp(runningMax - newMax);
    runningSum *= correction;
    for (var i = 0u; i < DIMS_PER_THREAD; i++) { acc[i] *= correction; }
    for (var j = 0u; j < n; j++) {
      let weight = exp(scores[j] - newMax);
      runningSum += weight;
      let vBase = slots[j] * kvCols + kvHeadBase;
      for (var i = 0u; i < DIMS_PER_THREAD; i++) {
        let d = lid + i * WG;
        if (d < headDim) { acc[i] += weight * vCache[vBase + d]; }
      }
    }
    runningMax = newMax;
    workgroupBarrier();
  }

  if (numSplits == 1u) {
    for (var i = 0u; i < DIMS_PER_THREAD; i++) {
      let d = lid + i * WG;
      if (d < headDim) { out[qBase + d] = acc[i] / runningSum; }
    }
  } else {
    let pBase = id * (headDim + 2u);
    if (lid == 0u) {
      partials[pBase] = runningMax;
      partials[pBase + 1u] = runningSum;
    }
    for (var i = 0u; i < DIMS_PER_THREAD; i++) {
      let d = lid + i * WG;
      if (d < headDim) { partials[pBase + 2u + d] = acc[i]; }
    }
  }
}
