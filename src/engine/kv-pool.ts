/**
 * The KV cache's pages, as indices into the backend's cache. A page is held by whoever has a
 * reference: a sequence using it, the prefix cache, or both (a shared prompt); it returns to
 * the free list when the last reference is released.
 */
export class KvPool {
  private readonly refCounts: Int32Array;
  private readonly freeList: Int32Array;
  private numFree: number;

  constructor(
    readonly numPages: number,
    readonly pageSize: number,
  ) {
    this.refCounts = new Int32Array(numPages);
    this.freeList = new Int32Array(numPages);
    // Hand out low page ids first.
    for (let i = 0; i < numPages; i++) this.freeList[i] = numPages - 1 - i;
    this.numFree = numPages;
  }

  get freePages(): number {
    return this.numFree;
  }

  /** `count` fresh pages with one reference each, or null (nothing taken) when too few are free. */
  allocate(count: number): number[] | null {
    if (count > this.numFree) return null;
    const pages = new Array<number>(count);
    for (let i = 0; i < count; i++) {
      const page = this.freeList[--this.numFree]!;
      this.refCounts[page] = 1;
      pages[i] = page;
    }
    return pages;
  }

  retain(page: number): void {
    if (this.refCounts[page]! <= 0) throw new Error(`KV page ${page} retained while free`);
    this.refCounts[page]!++;
  }

  release(page: number): void {
    const count = --this.refCounts[page]!;
    if (count < 0) throw new Error(`KV page ${page} released twice`);
    if (count === 0) this.freeList[this.numFree++] = page;
  }

  refCount(page: number): number {
    return this.refCounts[page]!;
  }
}

/** A growing list of page ids in a typed array, so a step's page table is built by memcpy. */
/** Up to this many page ids a plain loop beats making a view for a native copy (measured, docs/performance.md). */
const copyByElementMax = 24;

export class PageList {
  private ids = new Int32Array(16);
  length = 0;

  push(page: number): void {
    if (this.length === this.ids.length) {
      const grown = new Int32Array(this.ids.length * 2);
      grown.set(this.ids);
      this.ids = grown;
    }
    this.ids[this.length++] = page;
  }

  get(i: number): number {
    return this.ids[i]!;
  }

  /**
   * Copies the first `count` ids into `target` at `offset`. A few ids are copied one by one (no
   * view is made: this runs per sequence per step); more go through a view and a native copy,
   * which is many times faster for long page lists (page size 1).
   */
  copyTo(target: Int32Array, offset: number, count = this.length): void {
    const ids = this.ids;
    if (count > copyByElementMax) {
      target.set(ids.subarray(0, count), offset);
      return;
    }
    for (let i = 0; i < count; i++) target[offset + i] = ids[i]!;
  }

  /** The first `count` ids (a view: valid until the list changes). */
  view(count = this.length): Int32Array {
    return this.ids.subarray(0, count);
  }

  clear(): void {
    this.length = 0;
  }
}
