// out[r, outOffset + o] = sum_k x[r, k] * w[o, k], tiled: each workgroup computes a 64 x 64 tile
// of the output (4 x 4 per thread), staging 16-wide slices of x and w in workgroup memory.
// F32 accumulation whatever the weight type.
const TILE: u32 = 64u;
const TILE_K: u32 = 16u;
@group(0) @binding(1) var<uniform> params: LinearParams;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<wtype>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> xTile: array<f32, 1024>; // [k][row]
var<workgroup> wTile: array<f32, 1024>; // [k][col]

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let rows = rowsOf(params.rowsKind);
  let inFeatures = params.inFeatures;
  let rowBase = wid.y * TILE;
  let colBase = wid.x * TILE;
  let tx = lid % 16u;
  let ty = lid / 16u;
  var acc: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < inFeatures; k0 += TILE_K) {
    for (var i = 0u; i < 4u; i++) {
      let idx = lid + i * 256u;
      let kk = idx % TILE_K;
      let rr = idx / TILE_K;
      let k = k0 + kk;
      let row = rowBase + rr;
      let col = colBase + rr;
      var xv = 0.0;
      if (row < rows && k < inFeatures) { xv = x[row * inFeatures + k]; }
      xTile[kk * TILE + rr] = xv;
      var wv = 0.0;
      if (col < params.outCount && k < inFeatures) { wv = f32(w[col * inFeatures + k]); }
      wTile[kk * TILE + rr] = wv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TILE_K; kk++) {
      var xs: array<f32, 4>;
      var ws: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        xs[i] = xTile[kk * TILE + ty + 16u * i];
        ws[i] = wTile[kk * TILE + tx + 16u * i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { acc[i][j] += xs[i] * ws[j]; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let row = rowBase + ty + 16u * i;
    if (row >= rows) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let col = colBase + tx + 16u * j;
      if (col < params.outCount) { out[row * params.outStride + params.outOffset + col] = acc[i][j]; }
    }
  }
}
