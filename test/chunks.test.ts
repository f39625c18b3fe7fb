/**
 * ChunkList, the read buffer under every Conn: what its comments promise,
 * checked directly. A read inside one chunk is a view of that chunk, a read
 * across chunks is one copy into the returned buffer, and a delimiter scan
 * resumes where the last one stopped without looking at ruled-out bytes again.
 * The scan is also checked differentially against Buffer.concat + indexOf over
 * random chunkings, delimiters and maxBytes limits (fast-check, seeded).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { ChunkList } from "../src/chunks.ts";

/** Fixed seed so a run is reproducible; FC_SEED=n replays another one. */
const SEED = Number(process.env.FC_SEED ?? 20_240_611);

/**
 * What indexAfter must answer for the unconsumed bytes `data`: the offset just
 * past the first `delim` if it ends within `maxEnd`; -2 if no match can end
 * within `maxEnd` any more, whatever arrives later; else -1 (not yet).
 */
function reference(data: Buffer, delim: Uint8Array, maxEnd: number): number {
  const d = Buffer.from(delim);
  const i = data.indexOf(d);
  if (i >= 0) return i + d.length <= maxEnd ? i + d.length : -2;
  // The earliest place a match could still start: a tail of `data` that is a prefix of `delim`.
  for (let p = Math.max(0, data.length - d.length + 1); p < data.length; p++) {
    if (data.subarray(p).equals(d.subarray(0, data.length - p))) {
      return p + d.length <= maxEnd ? -1 : -2;
    }
  }
  return data.length + d.length <= maxEnd ? -1 : -2;
}

/** The first viable match start in `data` (see `reference`), or data.length if none. */
function firstViable(data: Buffer, delim: Uint8Array): number {
  const d = Buffer.from(delim);
  const i = data.indexOf(d);
  if (i >= 0) return i;
  for (let p = Math.max(0, data.length - d.length + 1); p < data.length; p++) {
    if (data.subarray(p).equals(d.subarray(0, data.length - p))) return p;
  }
  return data.length;
}

/** A chunk that records every indexOf(byte, from) made on it, as [label, from]. */
function spied(text: string, label: string, log: Array<[string, number]>): Buffer {
  const b = Buffer.alloc(text.length);
  b.write(text, "latin1");
  const indexOf = b.indexOf.bind(b);
  Object.defineProperty(b, "indexOf", {
    value: (v: number, from: number) => {
      log.push([label, from]);
      return indexOf(v, from);
    },
  });
  return b;
}

/** A ChunkList that records each copyInto: the destination and the byte count. */
class CountingChunkList extends ChunkList {
  copies: Array<{ dst: Uint8Array; n: number }> = [];
  override copyInto(dst: Uint8Array, n: number): void {
    this.copies.push({ dst, n });
    super.copyInto(dst, n);
  }
}

describe("take(): a view if one chunk holds the bytes, else one copy", () => {
  test("a read inside the head chunk is a view sharing the pushed chunk's memory", () => {
    const list = new ChunkList();
    // Buffer.alloc is never pooled: a shared ArrayBuffer can only mean a view of this chunk.
    const a = Buffer.alloc(100, 1);
    const b = Buffer.alloc(50, 2);
    list.push(a);
    list.push(b);
    const first = list.take(10);
    assert.equal(first.buffer, a.buffer);
    assert.equal(first.byteOffset, a.byteOffset);
    const second = list.take(90); // the rest of the head chunk, exactly
    assert.equal(second.buffer, a.buffer);
    assert.equal(second.byteOffset, a.byteOffset + 10);
    a[15] = 0xee;
    assert.equal(second[5], 0xee, "shares memory with the pushed chunk");
    const third = list.take(20); // now the head chunk is b
    assert.equal(third.buffer, b.buffer);
    assert.equal(third.byteOffset, b.byteOffset);
    assert.equal(list.length, 30);
    assert.equal(list.headLength(), 30);
  });

  test("a read across chunks is copied once, straight into the buffer it returns", () => {
    const list = new CountingChunkList();
    const a = Buffer.alloc(3000, 0x61);
    const b = Buffer.alloc(3000, 0x62);
    const c = Buffer.alloc(3000, 0x63);
    for (const x of [a, b, c]) list.push(x);
    list.take(1000); // a view: no copy
    assert.equal(list.copies.length, 0);
    const out = list.take(6000); // 2000 of a, all of b, 1000 of c
    assert.deepEqual(
      out,
      Buffer.concat([a.subarray(1000), b, c.subarray(0, 1000)]),
      "the right bytes",
    );
    assert.equal(list.copies.length, 1, "one copy");
    assert.equal(list.copies[0]!.dst, out, "into the returned buffer");
    assert.equal(list.copies[0]!.n, 6000);
    // A fresh buffer of exactly the bytes asked for (not a slice of a concat of everything).
    // (Its memory may come from Node's allocation pool, whose size differs between versions.)
    for (const x of [a, b, c]) assert.notEqual(out.buffer, x.buffer);
    assert.equal(out.length, 6000);
    a.fill(0);
    b.fill(0);
    c.fill(0);
    assert.equal(out[0], 0x61, "a copy: later writes to the chunks do not show through");
    assert.equal(out[5999], 0x63);
    assert.equal(list.length, 2000);
    // The rest of c is a view again.
    const rest = list.take(2000);
    assert.equal(rest.buffer, c.buffer);
    assert.equal(list.copies.length, 1);
  });

  test("take(0) is empty and consumes nothing; drain() hands back views of what is left", () => {
    const list = new ChunkList();
    const a = Buffer.alloc(10, 1);
    const b = Buffer.alloc(10, 2);
    list.push(a);
    list.push(Buffer.alloc(0)); // ignored
    list.push(b);
    assert.equal(list.take(0).length, 0);
    assert.equal(list.length, 20);
    list.take(4);
    const parts = list.drain();
    assert.equal(parts.length, 2);
    assert.equal(parts[0]!.buffer, a.buffer);
    assert.equal(parts[0]!.byteOffset, a.byteOffset + 4);
    assert.equal(parts[0]!.length, 6);
    assert.equal(parts[1], b);
    assert.equal(list.length, 0);
    assert.equal(list.headLength(), 0);
  });
});

describe("indexAfter(): examples", () => {
  const CRLF = Buffer.from("\r\n");
  const at = (chunks: string[], delim: Uint8Array, maxEnd: number) => {
    const list = new ChunkList();
    for (const c of chunks) list.push(Buffer.from(c, "latin1"));
    return list.indexAfter(delim, maxEnd);
  };

  test("a delimiter split across three chunks is found; the offset is just past it", () => {
    assert.equal(at(["head--", "-BOUN", "D", "ARY--tail"], Buffer.from("--BOUNDARY--"), 100), 17);
    assert.equal(at(["ab\r", "\ncd"], CRLF, 100), 4);
    assert.equal(at(["ab\r", "x\r", "\n"], CRLF, 100), 6, "a false start, then the match");
  });

  test("maxBytes: a match must end at or before maxEnd; -2 once none can", () => {
    assert.equal(at(["ab\r\n"], CRLF, 4), 4, "ends exactly at the limit");
    assert.equal(at(["ab\r\n"], CRLF, 3), -2);
    assert.equal(at(["abc\r"], CRLF, 5), -1, "could still complete at 5");
    assert.equal(at(["abc\r"], CRLF, 4), -2);
    assert.equal(at(["abcdef"], CRLF, 8), -1, "a match could still end at 8");
    assert.equal(at(["abcdef"], CRLF, 7), -2);
    assert.equal(at([], CRLF, 1), -2, "no room for the delimiter at all");
  });

  test("resumes the scan: chunks already ruled out are not searched again", () => {
    const log: Array<[string, number]> = [];
    const list = new ChunkList();
    list.push(spied("aaaa", "c0", log));
    assert.equal(list.indexAfter(CRLF, 1000), -1);
    assert.deepEqual(log.splice(0), [["c0", 0]]);
    list.push(spied("bbbb", "c1", log));
    assert.equal(list.indexAfter(CRLF, 1000), -1);
    assert.deepEqual(log.splice(0), [["c1", 0]], "c0 is not searched again");
    list.push(spied("cc\r", "c2", log));
    assert.equal(list.indexAfter(CRLF, 1000), -1, "a candidate \\r, undecided");
    assert.deepEqual(log.splice(0), [["c2", 0]]);
    list.push(spied("\ndd", "c3", log));
    assert.equal(list.indexAfter(CRLF, 1000), 12);
    assert.deepEqual(log.splice(0), [["c2", 2]], "resumes at the undecided candidate");
    // A match resets the scan: the next one starts from the front again.
    list.take(12);
    assert.equal(list.indexAfter(CRLF, 1000), -1);
    assert.deepEqual(log.splice(0), [["c3", 1]]);
  });

  test("a line dripping in one byte a chunk costs work linear in its length, not quadratic", () => {
    // Count how often the scan touches a chunk (its length), not how long it takes.
    let touches = 0;
    const counted = (): Buffer => {
      const b = Buffer.from("a");
      Object.defineProperty(b, "length", {
        get: () => {
          touches++;
          return 1;
        },
      });
      return b;
    };
    const list = new ChunkList();
    const n = 4000;
    for (let i = 0; i < n; i++) {
      list.push(counted());
      assert.equal(list.indexAfter(Buffer.from("\n"), 1 << 20), -1);
    }
    // A scan that walked from the head every time would touch about n * n / 2 = 8,000,000.
    assert.ok(touches < 20 * n, `${touches} chunk touches for ${n} one-byte chunks`);
  });

  test("progress is kept for an equal delimiter in another array, dropped for another delimiter", () => {
    const log: Array<[string, number]> = [];
    const list = new ChunkList();
    list.push(spied("xxxxxxxx", "c0", log));
    assert.equal(list.indexAfter(Buffer.from("\r\n"), 1000), -1);
    log.length = 0;
    list.push(spied("yy", "c1", log));
    assert.equal(list.indexAfter(Uint8Array.from([13, 10]), 1000), -1, "same bytes");
    assert.deepEqual(log.splice(0), [["c1", 0]]);
    assert.equal(list.indexAfter(Buffer.from("\n"), 1000), -1, "another delimiter");
    assert.deepEqual(log.splice(0), [
      ["c0", 0],
      ["c1", 0],
    ]);
    list.resetScan();
    assert.equal(list.indexAfter(Buffer.from("\n"), 1000), -1);
    assert.deepEqual(log.splice(0), [
      ["c0", 0],
      ["c1", 0],
    ]);
  });
});

// ------------------------------------------------------------------ differential

const ALPHABET = [0x61, 0x62, 0x0d, 0x0a]; // "a", "b", "\r", "\n": partial matches are common
const byteArb = fc.constantFrom(...ALPHABET);
const chunkArb = fc
  .array(byteArb, { minLength: 0, maxLength: 12 })
  .map((bytes) => Buffer.from(bytes));
const delimArb = fc.array(byteArb, { minLength: 1, maxLength: 4 }).map((b) => Uint8Array.from(b));

type Op =
  | { kind: "push"; chunk: Buffer }
  | { kind: "scan"; delim: number; copy: boolean; maxEnd: number }
  | { kind: "take"; n: number }
  | { kind: "copyInto"; n: number }
  | { kind: "takeMatch" }
  | { kind: "resetScan" }
  | { kind: "drain" };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: chunkArb.map((chunk) => ({ kind: "push" as const, chunk })) },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("scan" as const),
      delim: fc.nat(2),
      copy: fc.boolean(),
      maxEnd: fc.oneof(fc.nat(40), fc.constant(Number.POSITIVE_INFINITY)),
    }),
  },
  { weight: 2, arbitrary: fc.nat(30).map((n) => ({ kind: "take" as const, n })) },
  { weight: 1, arbitrary: fc.nat(30).map((n) => ({ kind: "copyInto" as const, n })) },
  { weight: 2, arbitrary: fc.constant({ kind: "takeMatch" as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: "resetScan" as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: "drain" as const }) },
);

/** Run `ops` against a ChunkList and a plain Buffer model; every answer must agree. */
function runAgainstModel(delims: Uint8Array[], ops: Op[]): void {
  const list = new ChunkList();
  let model = Buffer.alloc(0);
  let lastMatch = -1;
  for (const [i, op] of ops.entries()) {
    const where = `op #${i} ${op.kind}`;
    switch (op.kind) {
      case "push":
        list.push(op.chunk);
        model = Buffer.concat([model, op.chunk]);
        break;
      case "scan": {
        const d = delims[op.delim % delims.length]!;
        const got = list.indexAfter(op.copy ? Uint8Array.from(d) : d, op.maxEnd);
        assert.equal(got, reference(model, d, op.maxEnd), `${where}: delim ${[...d]}`);
        lastMatch = got;
        break;
      }
      case "take":
      case "takeMatch": {
        const n = op.kind === "take" ? Math.min(op.n, model.length) : lastMatch;
        if (n < 0) break;
        assert.deepEqual(list.take(n), model.subarray(0, n), where);
        model = model.subarray(n);
        lastMatch = -1;
        break;
      }
      case "copyInto": {
        const n = Math.min(op.n, model.length);
        const dst = new Uint8Array(n + 3);
        list.copyInto(dst, n);
        assert.deepEqual(Buffer.from(dst.subarray(0, n)), model.subarray(0, n), where);
        model = model.subarray(n);
        lastMatch = -1;
        break;
      }
      case "resetScan":
        list.resetScan();
        break;
      case "drain":
        assert.deepEqual(Buffer.concat(list.drain()), model, where);
        model = Buffer.alloc(0);
        lastMatch = -1;
        break;
    }
    assert.equal(list.length, model.length, `${where}: length`);
    const head = list.headLength();
    assert.ok(model.length === 0 ? head === 0 : head >= 1 && head <= model.length, where);
  }
}

describe("indexAfter(): differential against Buffer.concat + indexOf", () => {
  test("random chunkings, delimiters, limits, resumed scans and reads agree with the model", () => {
    fc.assert(
      fc.property(
        fc.array(delimArb, { minLength: 1, maxLength: 3 }),
        fc.array(opArb, { maxLength: 80 }),
        (d, ops) => runAgainstModel(d, ops),
      ),
      { seed: SEED, numRuns: 1000 },
    );
  });

  test("thousands of one-byte chunks, consumed as they come (the chunk array compacts), agree", () => {
    // More pushes than takes: the list never empties, so its consumed-chunk prefix passes
    // the 1024 mark and the chunk array is compacted while scans are under way.
    const tinyOpArb: fc.Arbitrary<Op> = fc.oneof(
      {
        weight: 5,
        arbitrary: byteArb.map((b) => ({ kind: "push" as const, chunk: Buffer.of(b) })),
      },
      { weight: 4, arbitrary: fc.constant({ kind: "take" as const, n: 1 }) },
      {
        weight: 2,
        arbitrary: fc.record({
          kind: fc.constant("scan" as const),
          delim: fc.nat(1),
          copy: fc.constant(false),
          maxEnd: fc.oneof(fc.nat(600), fc.constant(Number.POSITIVE_INFINITY)),
        }),
      },
      { weight: 1, arbitrary: fc.constant({ kind: "takeMatch" as const }) },
    );
    fc.assert(
      fc.property(
        fc.array(delimArb, { minLength: 1, maxLength: 2 }),
        fc.array(tinyOpArb, { minLength: 5000, maxLength: 6000 }),
        (d, ops) => runAgainstModel(d, ops),
      ),
      { seed: SEED, numRuns: 5 },
    );
  });

  test("ruled-out bytes are never examined again (overwriting them changes no answer)", () => {
    // After a scan answers -1, every byte before the first place a match could still
    // start is ruled out. Overwrite those bytes in the pushed chunks with copies of the
    // delimiter: a scan that looked at them again would now report a false match.
    fc.assert(
      fc.property(
        delimArb,
        fc.array(
          fc.oneof(
            { weight: 3, arbitrary: chunkArb },
            { weight: 2, arbitrary: fc.constant("scan" as const) },
          ),
          { maxLength: 80 },
        ),
        (delim, steps) => {
          const list = new ChunkList();
          const pushed: Buffer[] = []; // unconsumed chunks, as pushed (the list keeps references)
          let headOff = 0;
          let model = Buffer.alloc(0); // the original bytes
          const corrupt = (upTo: number) => {
            let pos = 0;
            for (const [k, c] of pushed.entries()) {
              for (let j = k === 0 ? headOff : 0; j < c.length && pos < upTo; j++, pos++) {
                c[j] = delim[pos % delim.length]!;
              }
            }
          };
          const consume = (n: number) => {
            model = model.subarray(n);
            let left = n;
            while (left > 0) {
              const avail = pushed[0]!.length - headOff;
              if (left < avail) {
                headOff += left;
                left = 0;
              } else {
                left -= avail;
                pushed.shift();
                headOff = 0;
              }
            }
          };
          for (const step of steps) {
            if (step !== "scan") {
              if (step.length === 0) continue;
              list.push(step);
              pushed.push(step);
              model = Buffer.concat([model, step]);
              continue;
            }
            const got = list.indexAfter(delim, Number.POSITIVE_INFINITY);
            assert.equal(got, reference(model, delim, Number.POSITIVE_INFINITY));
            if (got === -1) corrupt(firstViable(model, delim));
            else if (got > 0) {
              list.take(got);
              consume(got);
            }
          }
        },
      ),
      { seed: SEED, numRuns: 1000 },
    );
  });
});

// ------------------------------------------------------------------ batch takers

/**
 * Chunks as Node hands them over: views at a nonzero offset inside a larger allocation, with
 * other bytes around them, so a view made with the wrong base offset shows wrong bytes.
 */
function embedded(bytes: Uint8Array): Buffer {
  const host = Buffer.alloc(bytes.length + 14, 0xee);
  host.set(bytes, 7);
  return host.subarray(7, 7 + bytes.length);
}

/** Split `wire` at `cuts` (offsets, any order) into embedded chunks. */
function chunked(wire: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...at, wire.length]) {
    if (c > prev) out.push(embedded(wire.subarray(prev, c)));
    prev = Math.max(prev, c);
  }
  return out;
}

/** The frames a parser of `data` finds from its start: complete, each length <= maxLen. */
function modelFrames(
  data: Buffer,
  n: 1 | 2 | 4,
  maxLen: number,
): { frames: Buffer[]; used: number } {
  const frames: Buffer[] = [];
  let off = 0;
  while (data.length - off >= n) {
    const len = data.readUIntBE(off, n);
    if (len > maxLen || data.length - off - n < len) break;
    frames.push(data.subarray(off + n, off + n + len));
    off += n + len;
  }
  return { frames, used: off };
}

describe("takeFrames(): every whole frame buffered, views inside a chunk, one copy across", () => {
  test("example: frames inside one chunk are views of it; one across chunks is copied", () => {
    const list = new ChunkList();
    const a = embedded(Buffer.from([0, 2, 0x61, 0x62, 0, 3, 0x63]));
    const b = embedded(Buffer.from([0x64, 0x65, 0, 9]));
    list.push(a);
    list.push(b);
    const out: Buffer[] = [];
    assert.equal(list.takeFrames(2, 100, out), 2);
    assert.deepEqual(
      out.map((f) => f.toString()),
      ["ab", "cde"],
    );
    assert.equal(out[0]!.buffer, a.buffer, "inside one chunk: a view of it");
    assert.equal(out[0]!.byteOffset, a.byteOffset + 2);
    assert.notEqual(out[1]!.buffer, b.buffer, "across chunks: a copy");
    assert.equal(list.length, 2, "the incomplete frame is left, length and all");
    assert.equal(list.takeFrames(2, 100, out), 0);
    assert.equal(list.length, 2);
  });

  test("a frame exactly maxLen long is taken; one byte longer stops the batch, unconsumed", () => {
    const list = new ChunkList();
    const wire = Buffer.concat([
      Buffer.from([0, 0, 0, 4]),
      Buffer.from("abcd"),
      Buffer.from([0, 0, 0, 5]),
      Buffer.from("vwxyz"),
    ]);
    const chunks = chunked(wire, [10]);
    for (const c of chunks) list.push(c);
    const out: Buffer[] = [];
    assert.equal(list.takeFrames(4, 4, out), 1);
    assert.deepEqual(out, [Buffer.from("abcd")]);
    assert.equal(out[0]!.buffer, chunks[0]!.buffer, "taken in the one pass, as a view");
    assert.equal(list.length, 9);
    assert.equal(list.takeFrames(4, 5, out), 1, "within the limit it is taken");
    assert.deepEqual(out[1], Buffer.from("vwxyz"));
    assert.equal(list.length, 0);
  });

  test("random frames, chunkings and limits agree with a parser of the concatenated bytes", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1 as const, 2 as const, 4 as const),
        fc.array(fc.nat(40), { maxLength: 30 }),
        fc.array(fc.nat(2000), { maxLength: 30 }),
        fc.nat(45),
        fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 10 }),
        (n, sizes, cuts, maxLen, pushesPerTake) => {
          let seed = sizes.length;
          const wire = Buffer.concat(
            sizes.map((len) => {
              const f = Buffer.alloc(n + len);
              f.writeUIntBE(len, 0, n);
              for (let i = 0; i < len; i++) f[n + i] = seed = (seed * 31 + 7) & 0xff;
              return f;
            }),
          );
          const chunks = chunked(wire, cuts);
          const list = new ChunkList();
          let model = Buffer.alloc(0);
          let k = 0;
          for (let step = 0; k < chunks.length || step === 0; step++) {
            const pushes = pushesPerTake[step % pushesPerTake.length]!;
            for (let p = 0; p < pushes && k < chunks.length; p++, k++) {
              list.push(chunks[k]!);
              model = Buffer.concat([model, chunks[k]!]);
            }
            const out: Buffer[] = [];
            const got = list.takeFrames(n, maxLen, out);
            const want = modelFrames(model, n, maxLen);
            assert.equal(got, want.frames.length);
            assert.deepEqual(out, want.frames);
            model = model.subarray(want.used);
            assert.equal(list.length, model.length);
            assert.deepEqual(list.peek(list.length), model, "what is left is untouched");
          }
        },
      ),
      { seed: SEED, numRuns: 500 },
    );
  });
});

describe("splitHead(): pieces through a byte, views of the chunk that holds them", () => {
  test("random chunkings and limits: pieces are whole, within maxEnd, and nothing is lost", () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(0x61, 0x0a), { maxLength: 200 }),
        fc.array(fc.nat(300), { maxLength: 20 }),
        fc.integer({ min: 1, max: 12 }),
        (bytes, cuts, maxEnd) => {
          const wire = Buffer.from(bytes);
          const list = new ChunkList();
          for (const c of chunked(wire, cuts)) list.push(c);
          const out: Buffer[] = [];
          const got = list.splitHead(0x0a, maxEnd, out);
          assert.equal(got, out.length);
          const taken = Buffer.concat(out);
          assert.deepEqual(taken, wire.subarray(0, taken.length), "pieces in order, bytes right");
          for (const p of out) {
            assert.ok(p.length <= maxEnd, "within maxEnd");
            assert.equal(p.indexOf(0x0a), p.length - 1, "one piece: through the first newline");
          }
          assert.equal(list.length, wire.length - taken.length);
          // It stops only where the head chunk has no whole piece within maxEnd left.
          const head = list.peek(list.headLength());
          const nl = head.indexOf(0x0a);
          assert.ok(nl < 0 || nl + 1 > maxEnd, "no whole piece left in the head chunk");
        },
      ),
      { seed: SEED, numRuns: 500 },
    );
  });
});
