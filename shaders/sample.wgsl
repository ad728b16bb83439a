// The sampling rule of backends/shared/host-sampler.ts on the GPU, one workgroup per sequence.
//
// Tokens are ordered by a 64-bit key: high word the logit's order-preserving bits, low word
// (vocab - 1 - id), so a larger key comes first in the rule's order (descending probability,
// lower id first on ties). Top-k, top-p and the inverse-CDF draw each find a cut-off key by
// building it bit by bit from the most significant end, every probe being one reduction over
// the vocabulary: no sort is needed and the result matches the sorted-order definition exactly.
//
// out (u32): tokens[S] | logprobs[S] (f32 bits) | topIds[S * K] | topLogprobs[S * K] (f32 bits),
// K = step.topLogprobs.
const WG: u32 = SUM_WG;
struct Params { vocab: u32, idBits: u32, pad0: u32, pad1: u32 }
struct SeqSampling { temperature: f32, topP: f32, topK: i32, minP: f32, random: f32, logprobs: i32, maskRow: i32, pad0: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read> seqs: array<SeqSampling>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

var<workgroup> keysHi: array<u32, WG>;
var<workgroup> keysLo: array<u32, WG>;
var<workgroup> resultHi: u32;
var<workgroup> resultLo: u32;

struct Key { hi: u32, lo: u32 }

fn orderedBits(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

fn fromOrderedBits(k: u32) -> f32 {
  return select(bitcast<f32>(~k), bitcast<f32>(k & 0x7fffffffu), (k & 0x80000000u) != 0u);
}

fn atLeast(a: Key, b: Key) -> bool {
  return a.hi > b.hi || (a.hi == b.hi && a.lo >= b.lo);
}

fn keyOf(rowBase: u32, id: u32) -> Key {
  return Key(orderedBits(logits[rowBase + id]), params.vocab - 1u - id);
}

// The largest key strictly below `limit` (all keys when `limited` is false).
fn maxKeyBelow(rowBase: u32, lid: u32, limit: Key, limited: bool) -> Key {
  var best = Key(0u, 0u);
  for (var id = lid; id < params.vocab; id += WG) {
    let k = keyOf(rowBase, id);
    if ((!limited || !atLeast(k, limit)) && atLeast(k, best)) { best = k; }
  }
  keysHi[lid] = best.hi;
  keysLo[lid] = best.lo;
  workgroupBarrier();
  for (var width = WG / 2u; width > 0u; width >>= 1u) {
    if (lid < width) {
      let other = Key(keysHi[lid + width], keysLo[lid + width]);
      if (atLeast(other, Key(keysHi[lid], keysLo[lid]))) {
        keysHi[lid] = other.hi;
        keysLo[lid] = other.lo;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    resultHi = keysHi[0];
    resultLo = keysLo[0];
  }
  return Key(workgroupUniformLoad(&resultHi), workgroupUniformLoad(&resultLo));
}

struct Filter { cutoff: Key, minP: f32, maxLogit: f32, invTemperature: f32, weighted: bool }

// Sum over tokens with key >= max(at, cutoff) and probability >= minP (relative to the most
// likely token) of 1 (count) or of exp((logit - maxLogit) / temperature) (unnormalized mass).
fn sumFrom(rowBase: u32, lid: u32, at: Key, f: Filter) -> f32 {
  var total = 0.0;
  for (var id = lid; id < params.vocab; id += WG) {
    let k = keyOf(rowBase, id);
    if (atLeast(k, at) && atLeast(k, f.cutoff)) {
      let p = exp((logits[rowBase + id] - f.maxLogit) * f.invTemperature);
      if (p >= f.minP) { total += select(1.0, p, f.weighted); }
    }
  }
  return workgroupSum(total, lid);
}

// The largest key whose sumFrom exceeds (strict) or reaches `goal`: the cut-off token of a
// prefix in sampling order.
fn largestKeyReaching(rowBase: u32, lid: u32, goal: f32, strict: bool, f: Filter) -> Key {
  var answer = Key(0u, 0u);
  for (var bit = 31i; bit >= 0i; bit--) {
    let candidate = Key(answer.hi | (1u << u32(bit)), 0u);
    let sum = sumFrom(rowBase, lid, candidate, f);
    if (sum > goal || (!strict && sum == goal)) { answer = candidate; }
  }
  for (var bit = i32(params.idBits) - 1i; bit >= 0i; bit--) {
    let candidate = Key(answer.hi, answer.lo | (1u << u32(bit)));
    let sum = sumFrom(rowBase, lid, candidate, f);
    if (sum > goal || (!strict && sum == goal)) { answer = candidate; }
  }
  return answer;
}

fn idOf(k: Key) -> u32 {
  return params.vocab - 1u - k.lo;
}

fn justBelow(x: f32) -> f32 {
  return bitcast<f32>(bitcast<u32>(x) - 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let s = flatWorkgroup(wid, nwg);
  let numSeqs = step.numSeqs;
  if (s >= numSeqs) { return; }
  let vocab = params.vocab;
  let rowBase = s * vocab;
  let cfg = seqs[s];
  let top = maxKeyBelow(rowBase, lid, Key(0u, 0u), false);
  let maxLogit = fromOrderedBits(top.hi);
  var token = idOf(top);

  if (cfg.temperature > 0.0) {
    var f = Filter(Key(0u, 0u), 0.0, maxLogit, 1.0 / cfg.temperature, false);
    let k = select(vocab, min(u32(cfg.topK), vocab), cfg.topK > 0i);
    if (k < vocab) { f.cutoff = largestKeyReaching(rowBase, lid, f32(k), false, f); }
    f.weighted = true;
    if (cfg.topP < 1.0) {
      let total = sumFrom(rowBase, lid, Key(0u, 0u), f);
      f.cutoff = largestKeyReaching(rowBase, lid, cfg.topP * total, false, f);
    }
    f.minP = cfg.minP;
    let kept = sumFrom(rowBase, lid, Key(0u, 0u), f);
    let goal = min(cfg.random * kept, justBelow(kept));
    token = idOf(largestKeyReaching(rowBase, lid, goal, true, f));
  }

  if (lid == 0u) { out[s] = token; }
  if (cfg.logprobs >= 0i) {
    let all = Filter(Key(0u, 0u), 0.0, maxLogit, 1.0, true);
    let logSumExp = maxLogit + log(sumFrom(rowBase, lid, Key(0u, 0u), all));
    if (lid == 0u) { out[numSeqs + s] = bitcast<u32>(logits[rowBase + token] - logSumExp); }
    let topCount = min(u32(cfg.logprobs), step.topLogprobs);
    var previous = Key(0u, 0u);
    for (var i = 0u; i < topCount; i++) {
      let next = maxKeyBelow(rowBase, lid, previous, i > 0u);
      if (lid == 0u) {
        let K = step.topLogprobs;
        out[2u * numSeqs + s * K + i] = idOf(next);
        out[2u * numSeqs + numSeqs * K + s * K + i] = bitcast<u32>(fromOrderedBits(next.hi) - logSumExp);
      }
      previous = next;
    }
  }
}
