// logit_bias and min_tokens: sparse additions to the logits, applied first (before penalties,
// masks and sampling; the rule of backends/shared/host-sampler.ts). One thread per (sequence,
// token id) entry; a sequence's entries name distinct ids, so no two threads touch the same logit.
// entries (i32 x 3 each): sequence, token id, the bias's f32 bits (-inf bans the token)
struct Params { vocab: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@group(0) @binding(3) var<storage, read> entries: array<i32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flatWorkgroup(wid, nwg) * 256u + lid;
  if (i >= step.numBiases) { return; }
  let s = u32(entries[3u * i]);
  let id = u32(entries[3u * i + 1u]);
  let index = s * params.vocab + id;
  logits[index] = logits[index] + bitcast<f32>(entries[3u * i + 2u]);
}
