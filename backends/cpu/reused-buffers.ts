/** Named Float32Arrays that grow but are never reallocated per step; each call returns a view of the asked length. */
export class ReusedBuffers {
  private readonly arrays = new Map<string, Float32Array>();

  f32(name: string, length: number): Float32Array {
    let array = this.arrays.get(name);
    if (!array || array.length < length) {
      array = new Float32Array(Math.max(length, Math.ceil((array?.length ?? 0) * 1.5)));
      this.arrays.set(name, array);
    }
    return array.subarray(0, length);
  }
}
