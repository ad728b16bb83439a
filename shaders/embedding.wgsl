// out[t] = table[tokenIds[t]] for the tokens whose id falls in this chunk of the table's rows.
struct Params { cols: u32, rowStart: u32, rowCount: u32, pad: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> table: array<wtype>;
@group(0) @binding(3) var<storage, read> tokenIds: array<i32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flatWorkgroup(wid, nwg) * 256u + lid;
  if (i >= step.numTokens * params.cols) { return; }
  let t = i / params.cols;
  let c = i % params.cols;
  let id = u32(tokenIds[t]);
  if (id < params.rowStart || id >= params.rowStart + params.rowCount) { return; }
  out[i] = f32(table[(id - params.rowStart) * params.cols + c]);
}
