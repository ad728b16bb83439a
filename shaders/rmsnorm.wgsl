// One workgroup per row: optionally x += residual (written back), then out = rmsnorm(x) * weight.
override HAS_RESIDUAL: bool = false;
struct Params { cols: u32, rowsKind: u32, eps: f32, pad: u32 }
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = flatWorkgroup(wid, nwg);
  if (row >= rowsOf(params.rowsKind)) { return; }
  let cols = params.cols;
  let base = row * cols;
  var sum = 0.0;
  for (var c = lid; c < cols; c += 256u) {
    var v = x[base + c];
    if (HAS_RESIDUAL) {
      v += residual[base + c];
      x[base + c] = v;
    }
    sum += v * v;
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var width = 128u; width > 0u; width >>= 1u) {
    if (lid < width) { partial[lid] += partial[lid + width]; }
    workgroupBarrier();
  }
  let scale = inverseSqrt(partial[0] / f32(cols) + params.eps);
  for (var c = lid; c < cols; c += 256u) {
    out[base + c] = x[base + c] * scale * weight[c];
  }
}
