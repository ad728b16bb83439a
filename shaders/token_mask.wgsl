// Structured output: the logits of the ids a constrained sequence's allowed-token mask leaves out
// become -inf, before sampling and log-probs (the rule of backends/shared/host-sampler.ts).
// One thread per (sequence, 32-id word); seqs[s].maskRow is the sequence's row in `bits`, -1 for
// an unconstrained sequence. Bit (id % 32) of word id / 32 set: id allowed.
struct Params { vocab: u32, words: u32, negInfBits: u32, pad0: u32 }
struct SeqSampling { temperature: f32, topP: f32, topK: i32, minP: f32, random: f32, logprobs: i32, maskRow: i32, pad0: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@group(0) @binding(3) var<storage, read> seqs: array<SeqSampling>;
@group(0) @binding(4) var<storage, read> bits: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flatWorkgroup(wid, nwg) * 256u + lid;
  let words = params.words;
  if (i >= step.numSeqs * words) { return; }
  let s = i / words;
  let w = i % words;
  let row = seqs[s].maskRow;
  if (row < 0i) { return; }
  let word = bits[u32(row) * words + w];
  if (word == 0xffffffffu) { return; }
  // -inf from a uniform: a constant expression may not evaluate to an infinity.
  let negInf = bitcast<f32>(params.negInfBits);
  for (var b = 0u; b < 32u; b++) {
    let id = w * 32u + b;
    if (id >= params.vocab) { break; }
    if (((word >> b) & 1u) == 0u) { logits[s * params.vocab + id] = negInf; }
  }
}
