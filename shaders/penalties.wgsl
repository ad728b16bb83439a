// Repetition (CTRL/HF), frequency and presence (OpenAI) penalties on the logits, one thread per
// (sequence, distinct token) entry; entries of a sequence name distinct tokens, so no two
// threads touch the same logit.
// entries (i32 x 3 each): sequence, token id, count in the generated output
// seqPenalties (f32 x 4 each): repetition, frequency, presence, unused
struct Params { vocab: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@group(0) @binding(3) var<storage, read> entries: array<i32>;
@group(0) @binding(4) var<storage, read> seqPenalties: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flatWorkgroup(wid, nwg) * 256u + lid;
  if (i >= step.numPenalties) { return; }
  let s = u32(entries[3u * i]);
  let id = u32(entries[3u * i + 1u]);
  let count = entries[3u * i + 2u];
  let repetition = seqPenalties[4u * s];
  let index = s * params.vocab + id;
  var x = logits[index];
  if (repetition != 1.0) { x = select(x * repetition, x / repetition, x > 0.0); }
  if (count > 0) { x -= seqPenalties[4u * s + 1u] * f32(count) + seqPenalties[4u * s + 2u]; }
  logits[index] = x;
}
