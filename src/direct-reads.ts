/**
 * Direct reads: a node:tls socket's decrypted records handed to a {@link TransportSink} by
 * Node's `onread` path instead of its Readable stream.
 *
 * Node has two ways to deliver what a socket reads. The usual one allocates a buffer per
 * read in C++ and pushes it through the Readable machinery (push, addChunk, a "data" emit and
 * a nextTick per chunk). The other, which net.Socket's and tls.connect's documented `onread`
 * option selects, copies each read into a buffer the owner supplied and calls one function.
 * node:tls ignores that option when it wraps a socket that is already connected (every server
 * conn, and STARTTLS), so this module installs the same three fields the option sets, found on
 * the socket by their symbols' names, and falls back to "data" events wherever they or
 * TLSWrap's `useUserBuffer` are missing (another runtime, another Node). Measured on the node
 * engine: about 5 % less CPU per MB received and per echoed message (docs/benchmarks.md).
 *
 * Buffers: reads land in one 16 KiB buffer shared by every socket, and a small read is
 * copied out of it. A large read (half a TLS record or more) is handed over without a copy:
 * the socket's next reads go into a buffer of its own, which is handed to the sink as it is
 * and replaced, so no buffer the sink owns is ever written again. A conn keeps its own buffer
 * only while its reads stay large; idle conns share the one.
 *
 * The swap takes effect when the callback returns to Node, after the microtasks it queued.
 * Until then a read of the same socket would land in the buffer just handed out, and the one
 * thing that reads synchronously is an empty write (TLSWrap runs its read loop for it): a Conn
 * never writes an empty chunk, and a socket handed off (whose new owner may) gets copies only.
 * @module
 */
import { Buffer } from "node:buffer";
import { Socket } from "node:net";
import type { TransportSink } from "./transport.ts";

/** The largest read TLSWrap delivers: one record's plaintext (its ClearOut chunk). */
const RECORD = 16 * 1024;
/** Reads at least this large are handed over in the buffer they landed in (when it is theirs). */
const HAND_OVER = RECORD / 2;

/** Where a socket's reads go: a sink, "push" (handed off: back into its Readable), or nowhere. */
type Target = TransportSink | "push" | undefined;

const kTarget = Symbol("tlsnet.directReads");

interface DirectSocket extends Socket {
  [kTarget]?: Target;
  _handle?: { useUserBuffer?: (buf: Uint8Array) => void; constructor?: { name?: string } } | null;
}

/** Node's private fields of the onread path, by their symbols' names; null where absent. */
let fields: { buffer: symbol; callback: symbol; generator: symbol } | null | undefined;

function onreadFields(): typeof fields {
  if (fields !== undefined) return fields;
  fields = null;
  try {
    const symbols = Object.getOwnPropertySymbols(new Socket());
    const find = (name: string) => symbols.find((s) => s.description === name);
    const buffer = find("kBuffer");
    const callback = find("kBufferCb");
    const generator = find("kBufferGen");
    if (buffer && callback && generator) fields = { buffer, callback, generator };
  } catch {
    // not Node's net module: "data" events
  }
  return fields;
}

/** Every socket's reads land here unless its last read was large; never handed out. */
let shared: Buffer | undefined;
/** The buffer onDirectRead chose for the socket's next read, taken by nextBuffer() at once. */
let chosen: Buffer | undefined;

/**
 * Deliver `socket`'s reads to `sink` from now on. False when this Node cannot (the caller
 * listens for "data" instead). Bytes Node buffered before are delivered first.
 */
export function startDirectReads(socket: Socket, sink: TransportSink): boolean {
  const f = onreadFields();
  const s = socket as DirectSocket;
  const handle = s._handle;
  if (
    f === null ||
    f === undefined ||
    !handle ||
    handle.constructor?.name !== "TLSWrap" ||
    typeof handle.useUserBuffer !== "function" ||
    (s as unknown as Record<symbol, unknown>)[f.buffer] !== null // someone else's onread
  ) {
    return false;
  }
  if (s.readableLength > 0) {
    const before = s.read() as Buffer | null; // what Node buffered already, as one chunk
    if (before !== null) sink.onData(before);
  }
  shared ??= Buffer.allocUnsafeSlow(RECORD);
  const fieldsOf = s as unknown as Record<symbol, unknown>;
  fieldsOf[f.buffer] = shared;
  fieldsOf[f.callback] = onDirectRead;
  fieldsOf[f.generator] = nextBuffer;
  s[kTarget] = sink;
  handle.useUserBuffer(shared);
  return true;
}

/**
 * Stop delivering to the sink. With `handOff`, reads go back into the socket's Readable (its
 * new owner listens for "data"); otherwise they are discarded (the socket is closing). Once
 * the socket's handle is gone, its own buffer is let go (nothing can read into it any more).
 */
export function stopDirectReads(socket: Socket, handOff: boolean): void {
  const s = socket as DirectSocket;
  if (!(kTarget in s)) return;
  s[kTarget] = handOff ? "push" : undefined;
  if (!handOff && !s._handle && fields) {
    (s as unknown as Record<symbol, unknown>)[fields.buffer] = shared;
  }
}

/**
 * Node calls this with each read, the socket as `this`; true keeps reading. The next read's
 * buffer is chosen only after the sink returns: the sink may write to other sockets, and any
 * of those reads that runs meanwhile makes its own choice first.
 */
function onDirectRead(this: DirectSocket, n: number, buf: Buffer): boolean {
  const target = this[kTarget];
  if (target === undefined) return true; // closing: discarded, the buffer stays
  // Handed off: always a copy, the buffer stays. A "data" listener (node:http answering at once)
  // may make this very socket read again before we return, into the buffer it is using now.
  if (target === "push") return this.push(copyOut(buf, n));
  let chunk: Buffer;
  let next: Buffer | undefined;
  if (n >= HAND_OVER && buf !== shared) {
    chunk = n === buf.length ? buf : buf.subarray(0, n);
    next = Buffer.allocUnsafeSlow(RECORD); // that one is the sink's now
  } else {
    chunk = copyOut(buf, n);
    // A large read into the shared buffer: the next ones get a buffer they can keep.
    if (n >= HAND_OVER) next = Buffer.allocUnsafeSlow(RECORD);
    else if (buf !== shared) next = shared; // small again: back to the shared one
  }
  try {
    target.onData(chunk);
  } catch (err) {
    // Still switch buffers (a throw would leave Node reading into the one handed out); the
    // error surfaces as it would have from a "data" listener, uncaught.
    queueMicrotask(() => {
      throw err;
    });
  }
  chosen = next;
  return true;
}

function copyOut(buf: Buffer, n: number): Buffer {
  const chunk = Buffer.allocUnsafe(n);
  buf.copy(chunk, 0, 0, n);
  return chunk;
}

/**
 * Node asks for the next read's buffer right after onDirectRead returns (undefined keeps the
 * current one). It passes no socket, so onDirectRead leaves its choice here.
 */
function nextBuffer(): Buffer | undefined {
  const next = chosen;
  chosen = undefined;
  return next;
}
