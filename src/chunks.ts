/**
 * The read buffer: a FIFO of the chunks Node handed us plus a byte count.
 * Chunks are never concatenated on arrival; a read that fits in the head chunk
 * gets a `subarray` view, a read that spans chunks is copied once, and a
 * delimiter scan resumes where the previous one stopped.
 * @module
 */
import { Buffer } from "node:buffer";

const EMPTY = Buffer.alloc(0);

export class ChunkList {
  private chunks: Buffer[] = [];
  /** Index of the first live chunk in `chunks` (avoids Array#shift on every read). */
  private head = 0;
  /** Bytes of `chunks[head]` already consumed. */
  private headOffset = 0;
  /** Unconsumed bytes across all chunks. */
  length = 0;

  /** Delimiter of the last unfinished scan, and the first offset it has not ruled out. */
  private scanDelim: Uint8Array | null = null;
  private scanFrom = 0;
  /** Where the last scan stopped walking: a chunk index and its logical offset (-1: unknown). */
  private scanChunk = -1;
  private scanBase = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Length of the contiguous bytes at the front (the rest of the head chunk). */
  headLength(): number {
    const c = this.chunks[this.head];
    return c === undefined ? 0 : c.length - this.headOffset;
  }

  /** Remove and return the first `n` bytes (n <= length): a view if one chunk holds them, else one copy. */
  take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const first = this.chunks[this.head]!;
    const avail = first.length - this.headOffset;
    let out: Buffer;
    if (n <= avail) {
      // A whole chunk is handed out as it came (no view made): the common case of read().
      out = n === first.length ? first : first.subarray(this.headOffset, this.headOffset + n);
      this.consumeHead(n, avail);
    } else {
      out = Buffer.allocUnsafe(n);
      this.copyInto(out, n);
    }
    return out;
  }

  /** The first `n` bytes (n <= length) without consuming them: a view if one chunk holds them, else one copy. */
  peek(n: number): Buffer {
    if (n === 0) return EMPTY;
    const first = this.chunks[this.head]!;
    if (n <= first.length - this.headOffset) {
      return first.subarray(this.headOffset, this.headOffset + n);
    }
    const out = Buffer.allocUnsafe(n);
    let written = 0;
    let off = this.headOffset;
    for (let ci = this.head; written < n; ci++) {
      const c = this.chunks[ci]!;
      const step = Math.min(c.length - off, n - written);
      out.set(c.subarray(off, off + step), written);
      written += step;
      off = 0;
    }
    return out;
  }

  /**
   * The bytes through the first `byte`, if the head chunk holds one within
   * `maxEnd` bytes: a view, consumed. undefined otherwise (nothing consumed; a
   * general scan with indexAfter decides). The common case of line reads.
   */
  takeThroughByte(byte: number, maxEnd: number): Buffer | undefined {
    const c = this.chunks[this.head];
    if (c === undefined) return undefined;
    const start = this.headOffset;
    const i = c.indexOf(byte, start);
    if (i < 0 || i + 1 - start > maxEnd) return undefined;
    this.consumeHead(i + 1 - start, c.length - start);
    return c.subarray(start, i + 1);
  }

  /**
   * Every piece through `byte` that the head chunk holds whole (each within
   * `maxEnd` bytes), pushed to `out` as views and consumed in one step. Moves on
   * to the next chunk when the head one is used up exactly. Returns how many.
   */
  splitHead(byte: number, maxEnd: number, out: Buffer[]): number {
    let count = 0;
    for (;;) {
      const c = this.chunks[this.head];
      if (c === undefined) return count;
      const from = this.headOffset;
      // Views made straight from the chunk's memory: Buffer#subarray per piece costs more.
      const ab = c.buffer;
      const base = c.byteOffset;
      let start = from;
      for (let i = c.indexOf(byte, start); i >= 0 && i + 1 - start <= maxEnd; ) {
        out.push(Buffer.from(ab, base + start, i + 1 - start));
        count++;
        start = i + 1;
        i = c.indexOf(byte, start);
      }
      if (start === from) return count;
      this.consumeHead(start - from, c.length - from);
      if (start < c.length) return count; // a piece continues into the next chunk
    }
  }

  /**
   * Every length-prefixed frame buffered whole (a big-endian length of `n` bytes, then that
   * many bytes) whose length is at most `maxLen`, payloads pushed to `out` and consumed. One
   * pass over each chunk: frames inside it are views, consumed in one step; a frame that spans
   * chunks is copied once. Stops at the first frame not buffered whole or over `maxLen`
   * (nothing of it consumed). Returns how many.
   */
  takeFrames(n: 1 | 2 | 4, maxLen: number, out: Buffer[]): number {
    let count = 0;
    for (;;) {
      const c = this.chunks[this.head];
      if (c === undefined) return count;
      const from = this.headOffset;
      const end = c.length;
      const ab = c.buffer;
      const base = c.byteOffset;
      let off = from;
      while (off + n <= end) {
        const len =
          n === 4
            ? c[off]! * 0x1000000 + ((c[off + 1]! << 16) | (c[off + 2]! << 8) | c[off + 3]!)
            : n === 2
              ? (c[off]! << 8) | c[off + 1]!
              : c[off]!;
        const stop = off + n + len;
        if (len > maxLen || stop > end) break;
        out.push(Buffer.from(ab, base + off + n, len));
        off = stop;
        count++;
      }
      if (off > from) this.consumeHead(off - from, end - from);
      if (off === end) continue; // the chunk is used up: on to the next one
      // The next frame spans chunks (or is over maxLen): one copy if it is all here.
      if (this.length < n) return count;
      const len = this.uintAt(n);
      if (len > maxLen || this.length < n + len) return count;
      this.skip(n);
      out.push(this.take(len));
      count++;
    }
  }

  /** A big-endian unsigned integer of `n` bytes (1..4) at the front, not consumed (n <= length). */
  uintAt(n: number): number {
    const c = this.chunks[this.head]!;
    const off = this.headOffset;
    if (off + n <= c.length) return c.readUIntBE(off, n);
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + this.byteAt(i);
    return v;
  }

  /** Drop the first `n` bytes (n <= length) without copying them. */
  skip(n: number): void {
    while (n > 0) {
      const avail = this.chunks[this.head]!.length - this.headOffset;
      const step = Math.min(avail, n);
      this.consumeHead(step, avail);
      n -= step;
    }
  }

  /** The byte at offset `i` (i < length) without consuming anything. */
  byteAt(i: number): number {
    let off = this.headOffset + i;
    for (let ci = this.head; ; ci++) {
      const c = this.chunks[ci]!;
      if (off < c.length) return c[off]!;
      off -= c.length;
    }
  }

  /** Copy the first `n` bytes into `dst` and consume them (n <= min(length, dst.length)). */
  copyInto(dst: Uint8Array, n: number): void {
    let written = 0;
    while (written < n) {
      const c = this.chunks[this.head]!;
      const avail = c.length - this.headOffset;
      const step = Math.min(avail, n - written);
      dst.set(c.subarray(this.headOffset, this.headOffset + step), written);
      written += step;
      this.consumeHead(step, avail);
    }
  }

  /** Return every buffered chunk (views) and empty the list; used to hand bytes to another reader. */
  drain(): Buffer[] {
    const out: Buffer[] = [];
    for (let i = this.head; i < this.chunks.length; i++) {
      const c = this.chunks[i]!;
      out.push(i === this.head ? c.subarray(this.headOffset) : c);
    }
    this.chunks = [];
    this.head = 0;
    this.headOffset = 0;
    this.length = 0;
    this.resetScan();
    return out;
  }

  /**
   * Offset just past the first occurrence of `delim`, or -1. A match must end at or
   * before `maxEnd`; `-2` means no such match can exist any more (limit reached).
   * Offsets ruled out stay ruled out: the next call starts where this one stopped.
   */
  indexAfter(delim: Uint8Array, maxEnd: number): number {
    if (this.scanDelim !== delim && !sameBytes(this.scanDelim, delim)) {
      this.scanDelim = delim;
      this.scanFrom = 0;
      this.scanChunk = -1;
    }
    const first = delim[0]!;
    const dlen = delim.length;
    let pos = this.scanFrom;
    // Walk chunks to the one holding `pos`, from where the last scan stopped: a line
    // dripping in one byte at a time costs linear time, not quadratic.
    let ci = this.head;
    let base = -this.headOffset; // logical offset of chunks[ci][0]
    if (this.scanChunk >= 0 && this.scanBase <= pos) {
      ci = this.scanChunk;
      base = this.scanBase;
    }
    while (ci < this.chunks.length && base + this.chunks[ci]!.length <= pos) {
      base += this.chunks[ci]!.length;
      ci++;
    }
    while (ci < this.chunks.length) {
      const c = this.chunks[ci]!;
      const hit = c.indexOf(first, pos - base);
      if (hit < 0) {
        base += c.length;
        pos = base;
        ci++;
        continue;
      }
      const start = base + hit;
      this.scanChunk = ci;
      this.scanBase = base;
      if (start + dlen > maxEnd) {
        this.scanFrom = start;
        return -2;
      }
      const m = this.matchAt(delim, ci, hit);
      if (m === 1) {
        this.resetScan();
        return start + dlen;
      }
      if (m === 0) {
        this.scanFrom = start; // not enough bytes yet to decide this candidate
        return -1;
      }
      pos = start + 1;
    }
    this.scanFrom = Math.max(pos, this.scanFrom);
    this.scanChunk = ci;
    this.scanBase = base;
    return this.length + dlen > maxEnd ? -2 : -1;
  }

  /** Forget scan progress (after bytes were consumed by someone else). */
  resetScan(): void {
    this.scanDelim = null;
    this.scanFrom = 0;
    this.scanChunk = -1;
  }

  /** 1 = delim matches at chunks[ci][off], -1 = it does not, 0 = not enough bytes to tell. */
  private matchAt(delim: Uint8Array, ci: number, off: number): number {
    let c = this.chunks[ci]!;
    for (let k = 1; k < delim.length; k++) {
      off++;
      while (off >= c.length) {
        ci++;
        if (ci >= this.chunks.length) return 0;
        off -= c.length;
        c = this.chunks[ci]!;
      }
      if (c[off] !== delim[k]) return -1;
    }
    return 1;
  }

  private consumeHead(n: number, avail: number): void {
    this.length -= n;
    this.scanChunk = -1; // offsets moved: the next scan walks from the head once
    if (this.scanFrom > 0) this.scanFrom = Math.max(0, this.scanFrom - n);
    if (n < avail) {
      this.headOffset += n;
      return;
    }
    this.chunks[this.head] = EMPTY; // drop the reference for GC
    this.head++;
    this.headOffset = 0;
    if (this.head === this.chunks.length) {
      // All consumed. One consumed slot stays: an emptied JS array drops its backing store,
      // and the next push (the next message, on an echo) would allocate a new one.
      this.chunks.length = 1;
      this.chunks[0] = EMPTY;
      this.head = 1;
    } else if (this.head >= 1024 && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }
}

function sameBytes(a: Uint8Array | null, b: Uint8Array): boolean {
  if (a === null || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
