/**
 * Model-based tests for Conn (TCP and TLS) over real loopback sockets.
 *
 * A run is a random sequence of actions: peer actions (send bytes in random
 * splits, FIN, RST, destroy, pause/resume reading, garbage on the TCP stream
 * under TLS, a late TLS start) on a plain node:net / node:tls socket, and user
 * actions on the tlsnet Conn (every read kind, write, closeWrite, close,
 * deadlines, per-call timeouts, abort signals, bad arguments). The driver
 * (`runSequence`) executes the actions, starting user operations without
 * waiting for them (so reads, writes and the lazy TLS handshake overlap) and
 * records a trace: every operation's call time, settle time and outcome, every
 * peer event, the bytes the peer received. The checker (`checkTrace`) then
 * replays the trace against a reference model of the two byte streams and the
 * rules of docs/api.md and the issue-10 rules, and lists every violation with a
 * rule id. `runModel` wraps both in a fast-check property; the test
 * suite (test/model.test.ts) and scripts/fuzz.ts share them.
 *
 * The reference model:
 * - S, the peer's stream: the bytes the peer sent before its FIN/RST/destroy (and,
 *   under TLS, before any garbage). Reads are served in call order, so replaying
 *   the successful reads in call order gives each read its stream position; each
 *   result must be what that read kind returns from S at that position.
 * - The tlsnet→peer stream: the peer must receive the written bytes in call order,
 *   nothing duplicated; a rejected write is "none" (rejected at the call: after
 *   close, after closeWrite, aborted or past deadline: its bytes must not appear)
 *   or "maybe" (its bytes were handed over or not, all or nothing); when nothing
 *   abnormal happened, the peer gets every byte and then EOF.
 * - Every operation has a bound by which it must settle (its timeout, a deadline
 *   that fires, an abort, the peer's RST/FIN, close(), data that arrived); past
 *   the bound + SLACK_MS it is LATE, never settling is a HANG.
 *
 * Rule ids (a violation names one; closeWrite's get a CLOSEWRITE- prefix):
 * - HANG, LATE-<cause> (TIMEOUT, ABORT, ABORTED-SIGNAL, DEADLINE, RST, FIN, DESTROY,
 *   GARBAGE, CLOSE, BAD-ARG), LATE-WITH-DATA (a read settled long after the bytes it
 *   needed had arrived), WRITE-STUCK (a write never completed though the peer read).
 * - BYTES, BYTES-INVENTED, READ-SIZE, READLINE-VALUE, LOST-BYTES (EOF before every byte
 *   was returned), EOF-SPURIOUS, RESET-AS-EOF, EOF-PARTIAL, EOF-NOT-STICKY,
 *   LIMIT-SPURIOUS, LIMIT-IGNORED, RESET-LOST-BYTES (buffered bytes not readable after
 *   a reset), RESET-SPURIOUS.
 * - WRITE-LOST, WRITE-CORRUPT, REJECTED-WRITE-SENT, NO-EOF, CLOSEWRITE-NO-FIN,
 *   WRITE-AFTER-CLOSEWRITE, AFTER-CLOSE, CONN-KILLED (the peer saw the end though we
 *   never closed and nothing fatal happened).
 * - Errors: ERR-CLASS, ERR-CODE, ERR-UNEXPECTED, CLOSED-SPURIOUS, CLOSE-REJECTED,
 *   DEADLINE-SPURIOUS, DEADLINE-OP, DEADLINE-PAST, ABORT-PRE, ABORT-SPURIOUS,
 *   FOREIGN-ABORT, TLS-SPURIOUS, HANDSHAKE-RESET-CLASS, HANDSHAKE-RESET-REASON,
 *   HANDSHAKE-TIMEOUT-CLASS, BAD-ARG-CLASS, BAD-ARG-ACCEPTED, SYNC-THROW.
 * - Process: UNHANDLED-REJECTION, UNCAUGHT-EXCEPTION, FD-LEAK, DRIVER.
 *
 * What the driver does to keep the model exact (each is a limit of the model):
 * the peer's sockets have Nagle off; a RST waits until one poll has run after the
 * peer's last bytes (libuv reads data + RST in one poll as a clean EOF, which no
 * library above it can tell from a FIN); a destroy flushes the peer's writes first.
 * @module
 */
import { readdirSync } from "node:fs";
import net from "node:net";
import nodeTls from "node:tls";
import { TextDecoder } from "node:util";
import fc from "fast-check";
import { type Conn, type OpOptions, TLSConn, TlsnetError, tcp, tls } from "../../src/index.ts";
import { pki } from "./tls.ts";

// ------------------------------------------------------------------ actions

/** Which conn the run drives: plain or TLS; the tlsnet side accepted (server) or dialed (client). */
export interface ModelConfig {
  kind: "tcp" | "tls";
  side: "server" | "client";
}

/** Per-run choices about the peer. */
export interface Setup {
  /** TLS server side only: the peer starts its TLS handshake at a "start" action (or at teardown). */
  lateStart: boolean;
  /** The peer answers our FIN with its own (a "nice" client); otherwise only at teardown. */
  echoFin: boolean;
}

type Opts = { timeout?: number; signal?: "pre" | "later" };
/** After starting a user operation: go on at once (0) or wait up to this many ms for it to settle. */
type Wait = 0 | 5 | 30;

export type Action =
  // peer
  | { a: "send"; data: string; split?: number[] }
  | { a: "fin" }
  | { a: "rst" }
  | { a: "destroy" }
  | { a: "pause" }
  | { a: "resume" }
  | { a: "garbage"; g: number }
  | { a: "start" }
  | { a: "sleep"; ms: number }
  // user
  | { a: "read"; max: number; o?: Opts; w?: Wait }
  | { a: "readInto"; size: number; o?: Opts; w?: Wait }
  | { a: "readExactly"; n: number; o?: Opts; w?: Wait }
  | { a: "readUntil"; delim: string; maxBytes?: number; o?: Opts; w?: Wait }
  | { a: "readLine"; maxBytes?: number; o?: Opts; w?: Wait }
  | { a: "readAll"; maxBytes?: number; o?: Opts; w?: Wait }
  | { a: "write"; data: string | string[]; o?: Opts; w?: Wait }
  | { a: "bigWrite"; size: number; o?: Opts; w?: Wait }
  | { a: "closeWrite"; o?: Opts; w?: Wait }
  | { a: "close"; w?: Wait }
  | { a: "deadline"; dir: "rw" | "r" | "w"; at: number | null }
  | { a: "abort"; k: number }
  | { a: "bad"; which: number };

type UserKind =
  | "read"
  | "readInto"
  | "readExactly"
  | "readUntil"
  | "readLine"
  | "readAll"
  | "write"
  | "bigWrite"
  | "closeWrite"
  | "close"
  | "bad";

const READS = new Set<UserKind>([
  "read",
  "readInto",
  "readExactly",
  "readUntil",
  "readLine",
  "readAll",
]);
const WRITES = new Set<UserKind>(["write", "bigWrite"]);

const KiB = 1024;
const MiB = 1024 * KiB;

/** Garbage a TLS peer puts on the TCP stream: none of it can be the start of a valid record. */
const GARBAGE = [
  Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "latin1"),
  Buffer.from([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09]),
  Buffer.from([0xff, 0xfe, 0xfd, 0xfc, 0x00, 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60]),
];

/** The bad-argument calls: each must throw TypeError/RangeError synchronously. */
const BAD_CALLS: Array<{ name: string; call: (c: Conn) => unknown }> = [
  { name: "read(0)", call: (c) => c.read(0) },
  { name: "readExactly(-1)", call: (c) => c.readExactly(-1) },
  { name: "read(8, {timeout: -1})", call: (c) => c.read(8, { timeout: -1 }) },
  { name: "write(42)", call: (c) => c.write(42 as unknown as string) },
  { name: 'readUntil("")', call: (c) => c.readUntil("") },
  { name: 'setReadDeadline("soon")', call: (c) => c.setReadDeadline("soon" as unknown as number) },
  { name: "readInto(new Uint8Array(0))", call: (c) => c.readInto(new Uint8Array(0)) },
  {
    name: 'read(8, {signal: "x"})',
    call: (c) => c.read(8, { signal: "x" as unknown as AbortSignal }),
  },
];

const DELIMS = [";", "\r\n", "ab"];

/** A copy without the undefined fields (and without a zero wait): shorter counterexamples. */
function compact<T extends object>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o))
    if (v !== undefined && !(k === "w" && v === 0)) out[k] = v;
  return out as T;
}

/** The arbitraries. Shrinking goes towards shorter sequences, no options, no waits, small sizes. */
export function arbitraries(cfg: ModelConfig, maxActions = 14) {
  const unit = fc.constantFrom("a", "b", ";", "\r", "\n", "x", "\u0000", "\u00ff");
  const bytes = fc.string({ unit, minLength: 1, maxLength: 24 });
  const opts: fc.Arbitrary<Opts | undefined> = fc.oneof(
    { weight: 5, arbitrary: fc.constant(undefined) },
    { weight: 3, arbitrary: fc.record({ timeout: fc.integer({ min: 0, max: 60 }) }) },
    {
      weight: 2,
      arbitrary: fc.record({ signal: fc.constantFrom("pre" as const, "later" as const) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        timeout: fc.integer({ min: 0, max: 60 }),
        signal: fc.constantFrom("pre" as const, "later" as const),
      }),
    },
  );
  const wait = fc.constantFrom<Wait>(0, 5, 30);
  const maxBytes = fc.option(fc.integer({ min: 1, max: 12 }), { nil: undefined, freq: 2 });
  /** Records whose undefined fields are dropped (shorter counterexamples). */
  const user = <T extends object>(r: fc.Arbitrary<T>): fc.Arbitrary<Action> =>
    r.map((x) => compact(x) as unknown as Action);

  const peer: Array<fc.WeightedArbitrary<Action>> = [
    {
      weight: 10,
      arbitrary: user(
        fc.record({
          a: fc.constant("send" as const),
          data: bytes,
          split: fc.option(
            fc.array(fc.integer({ min: 1, max: 23 }), { minLength: 1, maxLength: 3 }),
            {
              nil: undefined,
            },
          ),
        }),
      ),
    },
    { weight: 2, arbitrary: fc.constant({ a: "fin" as const }) },
    { weight: 1, arbitrary: fc.constant({ a: "rst" as const }) },
    { weight: 1, arbitrary: fc.constant({ a: "destroy" as const }) },
    { weight: 1, arbitrary: fc.constant({ a: "pause" as const }) },
    { weight: 1, arbitrary: fc.constant({ a: "resume" as const }) },
    {
      weight: 3,
      arbitrary: fc.record({
        a: fc.constant("sleep" as const),
        ms: fc.integer({ min: 0, max: 25 }),
      }),
    },
  ];
  if (cfg.kind === "tls") {
    peer.push({
      weight: 1,
      arbitrary: fc.record({ a: fc.constant("garbage" as const), g: fc.nat(GARBAGE.length - 1) }),
    });
    if (cfg.side === "server")
      peer.push({ weight: 2, arbitrary: fc.constant({ a: "start" as const }) });
  }
  const users: Array<fc.WeightedArbitrary<Action>> = [
    {
      weight: 6,
      arbitrary: user(
        fc.record({
          a: fc.constant("read" as const),
          max: fc.integer({ min: 1, max: 16 }),
          o: opts,
          w: wait,
        }),
      ),
    },
    {
      weight: 2,
      arbitrary: user(
        fc.record({
          a: fc.constant("readInto" as const),
          size: fc.integer({ min: 1, max: 16 }),
          o: opts,
          w: wait,
        }),
      ),
    },
    {
      weight: 4,
      arbitrary: user(
        fc.record({
          a: fc.constant("readExactly" as const),
          n: fc.integer({ min: 1, max: 16 }),
          o: opts,
          w: wait,
        }),
      ),
    },
    {
      weight: 3,
      arbitrary: user(
        fc.record({
          a: fc.constant("readUntil" as const),
          delim: fc.constantFrom(...DELIMS),
          maxBytes,
          o: opts,
          w: wait,
        }),
      ),
    },
    {
      weight: 3,
      arbitrary: user(
        fc.record({ a: fc.constant("readLine" as const), maxBytes, o: opts, w: wait }),
      ),
    },
    {
      weight: 2,
      arbitrary: user(
        fc.record({
          a: fc.constant("readAll" as const),
          maxBytes: fc.option(fc.integer({ min: 1, max: 48 }), { nil: undefined, freq: 2 }),
          o: opts,
          w: wait,
        }),
      ),
    },
    {
      weight: 5,
      arbitrary: user(
        fc.record({
          a: fc.constant("write" as const),
          data: fc.oneof(
            { weight: 6, arbitrary: bytes },
            { weight: 1, arbitrary: fc.constant("") },
            { weight: 2, arbitrary: fc.array(bytes, { minLength: 1, maxLength: 3 }) },
          ),
          o: opts,
          w: wait,
        }),
      ),
    },
    {
      weight: 1,
      arbitrary: user(
        fc.record({
          a: fc.constant("bigWrite" as const),
          size: fc.constantFrom(256 * KiB, 8 * MiB, 32 * MiB),
          o: opts,
          w: wait,
        }),
      ),
    },
    {
      weight: 2,
      arbitrary: user(fc.record({ a: fc.constant("closeWrite" as const), o: opts, w: wait })),
    },
    { weight: 1, arbitrary: user(fc.record({ a: fc.constant("close" as const), w: wait })) },
    {
      weight: 3,
      arbitrary: fc.record({
        a: fc.constant("deadline" as const),
        dir: fc.constantFrom("r" as const, "w" as const, "rw" as const),
        at: fc.oneof(
          fc.constant(null),
          fc.constant(-1000),
          fc.integer({ min: 0, max: 80 }),
        ) as fc.Arbitrary<number | null>,
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ a: fc.constant("abort" as const), k: fc.nat(7) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ a: fc.constant("bad" as const), which: fc.nat(BAD_CALLS.length - 1) }),
    },
  ];
  const action = fc.oneof(...users, ...peer);
  const setup: fc.Arbitrary<Setup> = fc.record({
    lateStart: cfg.kind === "tls" && cfg.side === "server" ? fc.boolean() : fc.constant(false),
    echoFin: fc.boolean(),
  });
  return { setup, actions: fc.array(action, { maxLength: maxActions }) };
}

// ------------------------------------------------------------------ trace

export interface OpRec {
  id: number;
  kind: UserKind;
  act: Action;
  desc: string;
  callT: number;
  settleT?: number;
  status: "pending" | "ok" | "err";
  value?: unknown;
  err?: unknown;
  /** Threw synchronously instead of returning a promise. */
  sync: boolean;
  timeout?: number;
  pre: boolean;
  reason?: Error;
  ctl?: AbortController;
  abortT?: number;
  /** TLS: whether our handshake had completed when the op settled. */
  hsDone?: boolean;
  /** Write payload (as sent), readInto target. */
  data?: Buffer;
  into?: Uint8Array;
  /** The close() the driver makes at the end of every run. */
  cleanup?: boolean;
}

export interface Trace {
  cfg: ModelConfig;
  setup: Setup;
  actions: Action[];
  t0: number;
  ops: OpRec[];
  /** Bytes the peer put into its stream, in order; `valid` false once garbage corrupted it. */
  sends: Array<{ t: number; data: Buffer; valid: boolean }>;
  fin?: number;
  rst?: number;
  destroy?: number;
  garbage?: number;
  /** TLS server side: when the peer started TLS; when its handshake completed. */
  started?: number;
  peerSecure?: number;
  closeCalls: number[];
  closeWriteCalls: number[];
  deadlines: Array<{ t: number; dir: "r" | "w"; at: number | null }>;
  /** At each RST/destroy: reads settled ok so far and conn.unreadBytes, for "buffered bytes stay readable". */
  snaps: Array<{ t: number; okIds: number[]; unread: number }>;
  peerRecv: Buffer[];
  peerEnd?: number;
  peerErr?: { t: number; code: string };
  peerClose?: number;
  /** Teardown: peer resumed, auto-FIN on; cleanup close() called. */
  teardownT?: number;
  /** When the driver stopped waiting for pending writes to drain (nothing abnormal happened). */
  drainCheckT?: number;
  cleanupT?: number;
  /** Whether our TLS handshake was complete when close() was first called. */
  hsDoneAtClose?: boolean;
  unhandled: unknown[];
  uncaught: unknown[];
  fdBaseline?: number;
  fdAfter?: number;
  log: string[];
  /** Driver-level problems (setup failed, the driver itself stuck). */
  driverError?: string;
}

/** How late an operation may settle after its bound (the machine is loaded). */
export const SLACK_MS = 1500;
/** How early a timer-driven rejection may come (timers are coarse). */
const EARLY_MS = 5;
/**
 * Deadlines are given as wall-clock times (Date.now() + ms) and converted to the monotonic
 * clock with the conn's own Date.now(): two readings in whole milliseconds, so the conn's
 * expiry may come up to about 1 ms before the model's `t + at`.
 */
const WALL_CLOCK_SLACK_MS = 2;
/** A deadline this far in the past at the call is "already expired" for sure. */
const PAST_MARGIN_MS = 20;
/** With the peer reading again, pending writes must complete within this long. */
const WRITE_DRAIN_MS = 5000;
/** close() may linger this long (2 s) plus a TLS 1.3 ticket wait (250 ms). */
const CLOSE_BOUND_MS = 2300;

const now = () => performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const tick = () => new Promise<void>((r) => setImmediate(r));

function fdCount(): number {
  try {
    return readdirSync("/proc/self/fd").length;
  } catch {
    return -1; // no procfs: the check is skipped
  }
}

// ------------------------------------------------------------------ environment

/** Listeners and certificates shared by the runs of one property. */
export interface ModelEnv {
  cfg: ModelConfig;
  /** Next connected pair: our Conn and the peer's raw TCP socket. */
  pair: () => Promise<{ conn: Conn; raw: net.Socket; tlsServerSide?: nodeTls.TLSSocket }>;
  ca: string;
  /** For the TLS client side: wraps a raw server socket as the peer TLS server. */
  wrapServer?: (raw: net.Socket) => nodeTls.TLSSocket;
  close: () => Promise<void>;
}

export async function createEnv(cfg: ModelConfig): Promise<ModelEnv> {
  const { ca, leaf } = await pki();
  if (cfg.side === "server") {
    const ln =
      cfg.kind === "tcp"
        ? await tcp.listen({ addr: "127.0.0.1:0" })
        : await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
    return {
      cfg,
      ca: ca.cert,
      pair: async () => {
        const raw = net.connect({ host: "127.0.0.1", port: ln.addr.port, allowHalfOpen: true });
        raw.on("error", () => {}); // recorded by the peer once it exists
        const conn = await ln.accept({ timeout: 5000 });
        await new Promise<void>((resolve, reject) => {
          if (!raw.connecting) return resolve();
          raw.once("connect", () => resolve());
          raw.once("error", reject);
        });
        return { conn, raw };
      },
      close: () => ln.close(),
    };
  }
  // tlsnet dials: the peer is a node:net server (TLS: a tls.Server fed the raw sockets).
  const waiting: Array<(s: net.Socket) => void> = [];
  const ready: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on("error", () => {});
    const w = waiting.shift();
    if (w) w(s);
    else ready.push(s);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  const nextRaw = () =>
    new Promise<net.Socket>((resolve) => {
      const s = ready.shift();
      if (s) resolve(s);
      else waiting.push(resolve);
    });
  const tlsServer =
    cfg.kind === "tls"
      ? nodeTls.createServer({ cert: leaf.cert, key: leaf.key, allowHalfOpen: true })
      : undefined;
  tlsServer?.on("tlsClientError", () => {});
  const env: ModelEnv = {
    cfg,
    ca: ca.cert,
    pair: async () => {
      const rawP = nextRaw();
      let tlsServerSide: nodeTls.TLSSocket | undefined;
      let conn: Conn;
      if (cfg.kind === "tcp") {
        conn = await tcp.connect(`127.0.0.1:${port}`, { timeout: 5000 });
      } else {
        const secured = new Promise<nodeTls.TLSSocket>((resolve) =>
          tlsServer!.once("secureConnection", resolve),
        );
        const dialing = tls.connect(`localhost:${port}`, { ca: ca.cert, timeout: 5000 });
        const raw = await rawP;
        tlsServer!.emit("connection", raw);
        conn = await dialing;
        tlsServerSide = await secured;
      }
      const raw = await rawP;
      return tlsServerSide ? { conn, raw, tlsServerSide } : { conn, raw };
    },
    close: async () => {
      for (const s of ready) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  return env;
}

// ------------------------------------------------------------------ the peer

/** The test-controlled end of the connection. */
class Peer {
  /** The socket bytes go through: raw (TCP) or the TLS socket. Undefined before a late TLS start. */
  sock: net.Socket | undefined;
  private queued: Buffer[] = [];
  private queuedFin = false;
  paused = false;
  autoFin = false;
  finished = false;
  gone = false;

  constructor(
    readonly raw: net.Socket,
    private readonly tr: Trace,
    private readonly env: ModelEnv,
    tlsServerSide: nodeTls.TLSSocket | undefined,
  ) {
    // No Nagle: a small second write would wait ~40 ms for a delayed ACK, and a RST in
    // between would discard it, so "sent" would not mean "on the wire".
    raw.setNoDelay(true);
    raw.on("error", (e: NodeJS.ErrnoException) => this.onError(e));
    raw.on("close", () => {
      tr.peerClose ??= now();
    });
    // Before a late TLS start the raw socket is the peer: it answers our FIN at teardown.
    raw.on("end", () => {
      if (!this.sock) {
        tr.peerEnd ??= now();
        if (this.autoFin) this.fin("auto");
      }
    });
    if (env.cfg.kind === "tcp") this.attach(raw);
    else if (tlsServerSide) {
      this.attach(tlsServerSide);
      tr.peerSecure = now();
    }
  }

  private onError(e: NodeJS.ErrnoException): void {
    if (!this.tr.peerErr) this.tr.peerErr = { t: now(), code: e.code ?? e.message };
  }

  private attach(s: net.Socket): void {
    this.sock = s;
    s.on("data", (b: Buffer) => this.tr.peerRecv.push(b));
    s.on("end", () => {
      this.tr.peerEnd ??= now();
      this.log("peer got EOF");
      if (this.autoFin) this.fin("auto");
    });
    s.on("error", (e: NodeJS.ErrnoException) => this.onError(e));
    if (this.paused) s.pause();
  }

  private log(what: string): void {
    this.tr.log.push(`${(now() - this.tr.t0).toFixed(1)} ${what}`);
  }

  /** TLS server side: start the client handshake over the raw socket. */
  start(): void {
    if (this.sock || this.env.cfg.kind !== "tls" || this.gone || this.raw.destroyed) return;
    if (this.raw.writableEnded) return; // FIN before TLS: no handshake any more
    this.tr.started = now();
    const t = nodeTls.connect({ socket: this.raw, ca: this.env.ca, servername: "localhost" });
    t.on("secureConnect", () => {
      this.tr.peerSecure ??= now();
    });
    this.attach(t);
    for (const b of this.queued) t.write(b);
    this.queued = [];
    if (this.queuedFin) t.end();
  }

  send(data: Buffer, split: number[] | undefined): Promise<void> | void {
    const cuts = [...new Set((split ?? []).filter((c) => c > 0 && c < data.length))].sort(
      (a, b) => a - b,
    );
    const pieces: Buffer[] = [];
    let from = 0;
    for (const c of cuts) {
      pieces.push(data.subarray(from, c));
      from = c;
    }
    pieces.push(data.subarray(from));
    // Each piece is recorded as it goes out: an auto-FIN may come between two pieces.
    const put = (p: Buffer): boolean => {
      if (this.finished || this.gone || this.raw.destroyed) return false;
      this.tr.sends.push({ t: now(), data: p, valid: this.tr.garbage === undefined });
      if (this.sock) this.sock.write(p);
      else this.queued.push(p);
      return true;
    };
    if (pieces.length === 1 || !this.sock) {
      for (const p of pieces) put(p);
      return;
    }
    return (async () => {
      for (const [i, p] of pieces.entries()) {
        if (i > 0) await tick();
        if (!put(p)) return;
      }
    })();
  }

  fin(how = ""): void {
    if (this.finished || this.gone) return;
    this.finished = true;
    this.tr.fin ??= now();
    this.log(`peer FIN ${how}`);
    if (this.sock) this.sock.end();
    else if (this.env.cfg.kind === "tls" && this.tr.started === undefined) this.raw.end();
    else this.queuedFin = true;
  }

  rst(): void {
    if (this.gone || this.raw.destroyed) return;
    this.gone = true;
    this.tr.rst = now();
    this.raw.resetAndDestroy();
  }

  /** Close without FIN-then-read: flush what we sent, then destroy. */
  async destroy(): Promise<void> {
    if (this.gone || this.raw.destroyed) return;
    this.gone = true;
    const until = now() + 200;
    while (
      now() < until &&
      ((this.sock?.writableLength ?? 0) > 0 || this.raw.writableLength > 0) &&
      !this.raw.destroyed
    ) {
      await sleep(2);
    }
    this.tr.destroy = now();
    if (this.sock) this.sock.destroy();
    this.raw.destroy();
  }

  garbage(g: Buffer): void {
    if (this.gone || this.finished || this.raw.destroyed || this.raw.writableEnded) return;
    this.tr.garbage ??= now();
    this.raw.write(g);
  }

  pause(): void {
    this.paused = true;
    this.sock?.pause();
  }

  resume(): void {
    this.paused = false;
    this.sock?.resume();
  }

  teardown(): void {
    this.autoFin = true;
    const open = this.tr.closeCalls.length === 0;
    if (open && this.tr.rst === undefined && this.tr.destroy === undefined && !this.finished) {
      if (this.env.cfg.kind === "tls" && !this.sock && this.tr.garbage === undefined) this.start();
    }
    this.resume();
    if (!this.sock) this.raw.resume(); // TLS never started: let the raw socket see our FIN
    if (this.tr.peerEnd !== undefined) this.fin("auto");
  }

  kill(): void {
    this.gone = true;
    this.sock?.destroy();
    this.raw.destroy();
  }
}

// ------------------------------------------------------------------ driver

/** Run one action sequence against a fresh pair; returns the trace (never throws). */
export async function runSequence(env: ModelEnv, setup: Setup, actions: Action[]): Promise<Trace> {
  const tr: Trace = {
    cfg: env.cfg,
    setup,
    actions,
    t0: now(),
    ops: [],
    sends: [],
    closeCalls: [],
    closeWriteCalls: [],
    deadlines: [],
    snaps: [],
    peerRecv: [],
    unhandled: [],
    uncaught: [],
    log: [],
  };
  const onUnhandled = (e: unknown) => tr.unhandled.push(e);
  const onUncaught = (e: unknown) => tr.uncaught.push(e);
  process.on("unhandledRejection", onUnhandled);
  process.on("uncaughtException", onUncaught);
  let conn: Conn | undefined;
  let peer: Peer | undefined;
  try {
    tr.fdBaseline = fdCount();
    const p = await withBound(env.pair(), 10_000, "connecting the pair");
    conn = p.conn;
    tr.t0 = now();
    peer = new Peer(p.raw, tr, env, p.tlsServerSide);
    if (env.cfg.kind === "tls" && env.cfg.side === "server" && !setup.lateStart) peer.start();
    if (setup.echoFin) peer.autoFin = true;
    await withBound(drive(tr, conn, peer, actions), 60_000, "the driver");
  } catch (err) {
    tr.driverError = err instanceof Error ? (err.stack ?? err.message) : String(err);
  } finally {
    peer?.kill();
    if (conn) await withBound(conn.close(), 5000, "final close").catch(() => {});
    // fds: sockets close asynchronously; give them a moment.
    const until = now() + 3000;
    for (;;) {
      await sleep(10);
      tr.fdAfter = fdCount();
      if (tr.fdBaseline === undefined || tr.fdAfter <= tr.fdBaseline || now() > until) break;
    }
    await tick();
    await tick();
    process.off("unhandledRejection", onUnhandled);
    process.off("uncaughtException", onUncaught);
  }
  return tr;
}

async function withBound<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function describe(act: Action): string {
  const { a, ...rest } = act as { a: string } & Record<string, unknown>;
  const parts = Object.entries(rest).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return `${a}(${parts.join(" ")})`;
}

function optsOf(op: OpRec, o: Opts | undefined): OpOptions | undefined {
  if (!o) return undefined;
  const out: OpOptions = {};
  if (o.timeout !== undefined) {
    out.timeout = o.timeout;
    op.timeout = o.timeout;
  }
  if (o.signal) {
    op.reason = new Error(`abort reason of op #${op.id}`);
    if (o.signal === "pre") {
      op.pre = true;
      out.signal = AbortSignal.abort(op.reason);
    } else {
      op.ctl = new AbortController();
      out.signal = op.ctl.signal;
    }
  }
  return out;
}

/** The payload a write sends: tagged with the op id so that every write's bytes are unique. */
function writePayload(id: number, data: string | string[]): Array<Buffer> {
  const parts = typeof data === "string" ? [data] : data;
  if (parts.every((p) => p === "")) return parts.map(() => Buffer.alloc(0));
  return parts.map((p, i) => Buffer.from(i === 0 ? `<${id}>${p}` : p, "latin1"));
}

function bigPayload(id: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = (id * 2654435761) >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  b.write(`<${id}>`, 0, "latin1");
  return b;
}

async function drive(tr: Trace, conn: Conn, peer: Peer, actions: Action[]): Promise<void> {
  const log = (s: string) => tr.log.push(`${(now() - tr.t0).toFixed(1)} ${s}`);
  const settled = new Map<number, Promise<void>>();

  const start = (act: Action, kind: UserKind, call: (op: OpRec) => unknown): OpRec => {
    const op: OpRec = {
      id: tr.ops.length,
      kind,
      act,
      desc: describe(act),
      callT: now(),
      status: "pending",
      sync: false,
      pre: false,
    };
    tr.ops.push(op);
    let ret: unknown;
    try {
      ret = call(op);
    } catch (err) {
      op.sync = true;
      op.status = "err";
      op.err = err;
      op.settleT = now();
      log(`#${op.id} ${op.desc} threw ${show(err)}`);
      return op;
    }
    if (!(ret instanceof Promise)) {
      op.status = "ok";
      op.value = ret;
      op.settleT = now();
      return op;
    }
    const hs = () => handshakeDone(conn);
    settled.set(
      op.id,
      ret.then(
        (v) => {
          op.settleT = now();
          op.status = "ok";
          op.value = v;
          op.hsDone = hs();
          log(`#${op.id} ${op.desc} -> ${showValue(v, op)}`);
        },
        (e) => {
          op.settleT = now();
          op.status = "err";
          op.err = e;
          op.hsDone = hs();
          log(`#${op.id} ${op.desc} -> ${show(e)}`);
        },
      ),
    );
    log(`#${op.id} ${op.desc} called`);
    return op;
  };

  const waitFor = async (op: OpRec, w: Wait | undefined) => {
    const p = settled.get(op.id);
    if (!w || !p) return;
    await Promise.race([p, sleep(w)]);
  };

  for (const act of actions) {
    switch (act.a) {
      case "send":
        await peer.send(Buffer.from(act.data, "latin1"), act.split);
        log(`peer send ${JSON.stringify(act.data)}`);
        break;
      case "fin":
        peer.fin();
        break;
      case "rst":
        if (!peer.gone && !peer.raw.destroyed) {
          // A poll turn after the last bytes went out (two immediates make sure one poll runs
          // in between; a TLS peer may write queued data or tickets meanwhile, so repeat): data
          // and RST read in one poll look like a clean EOF to libuv (a partial read plus
          // POLLHUP short-circuits to EOF), which tlsnet cannot tell from a FIN. The model
          // needs the RST to be seen as one.
          for (let i = 0; i < 50; i++) {
            const written = peer.raw.bytesWritten;
            await tick();
            await tick();
            if (peer.raw.bytesWritten === written) break;
          }
          tr.snaps.push(snap(tr, conn));
          peer.rst();
          log("peer RST");
        }
        break;
      case "destroy":
        if (!peer.gone && !peer.raw.destroyed) {
          await peer.destroy();
          tr.snaps.push(snap(tr, conn));
          log("peer destroyed");
        }
        break;
      case "pause":
        peer.pause();
        break;
      case "resume":
        peer.resume();
        break;
      case "garbage":
        peer.garbage(GARBAGE[act.g % GARBAGE.length]!);
        log("peer garbage");
        break;
      case "start":
        peer.start();
        break;
      case "sleep":
        await sleep(act.ms);
        break;
      case "read": {
        const op = start(act, "read", (op) => conn.read(act.max, optsOf(op, act.o)));
        await waitFor(op, act.w);
        break;
      }
      case "readInto": {
        const op = start(act, "readInto", (op) => {
          op.into = new Uint8Array(act.size);
          return conn.readInto(op.into, optsOf(op, act.o));
        });
        await waitFor(op, act.w);
        break;
      }
      case "readExactly": {
        const op = start(act, "readExactly", (op) => conn.readExactly(act.n, optsOf(op, act.o)));
        await waitFor(op, act.w);
        break;
      }
      case "readUntil": {
        const op = start(act, "readUntil", (op) => {
          const o = optsOf(op, act.o);
          return conn.readUntil(
            act.delim,
            act.maxBytes === undefined && !o ? undefined : { ...o, maxBytes: act.maxBytes },
          );
        });
        await waitFor(op, act.w);
        break;
      }
      case "readLine": {
        const op = start(act, "readLine", (op) => {
          const o = optsOf(op, act.o);
          return conn.readLine(
            act.maxBytes === undefined && !o ? undefined : { ...o, maxBytes: act.maxBytes },
          );
        });
        await waitFor(op, act.w);
        break;
      }
      case "readAll": {
        const op = start(act, "readAll", (op) => {
          const o = optsOf(op, act.o);
          return conn.readAll(
            act.maxBytes === undefined && !o ? undefined : { ...o, maxBytes: act.maxBytes },
          );
        });
        await waitFor(op, act.w);
        break;
      }
      case "write": {
        const op = start(act, "write", (op) => {
          const parts = writePayload(op.id, act.data);
          op.data = Buffer.concat(parts);
          const data = typeof act.data === "string" ? parts[0]! : parts;
          return conn.write(data, optsOf(op, act.o));
        });
        await waitFor(op, act.w);
        break;
      }
      case "bigWrite": {
        const op = start(act, "bigWrite", (op) => {
          op.data = bigPayload(op.id, act.size);
          return conn.write(op.data, optsOf(op, act.o));
        });
        await waitFor(op, act.w);
        break;
      }
      case "closeWrite": {
        tr.closeWriteCalls.push(now());
        const op = start(act, "closeWrite", (op) =>
          (conn.closeWrite as (o?: OpOptions) => Promise<void>).call(conn, optsOf(op, act.o)),
        );
        await waitFor(op, act.w);
        break;
      }
      case "close": {
        tr.closeCalls.push(now());
        tr.hsDoneAtClose ??= handshakeDone(conn);
        const op = start(act, "close", () => conn.close());
        await waitFor(op, act.w);
        break;
      }
      case "deadline": {
        const t = now();
        const at = act.at === null ? null : t + act.at;
        const wall = act.at === null ? null : Date.now() + act.at;
        if (act.dir !== "w") tr.deadlines.push({ t, dir: "r", at });
        if (act.dir !== "r") tr.deadlines.push({ t, dir: "w", at });
        if (act.dir === "rw") conn.setDeadline(wall);
        else if (act.dir === "r") conn.setReadDeadline(wall);
        else conn.setWriteDeadline(wall);
        log(
          `deadline ${act.dir} ${act.at === null ? "cleared" : `now${act.at >= 0 ? "+" : ""}${act.at} ms`}`,
        );
        break;
      }
      case "abort": {
        const abortable = tr.ops.filter((o) => o.ctl);
        const op = abortable.length > 0 ? abortable[act.k % abortable.length] : undefined;
        if (op?.ctl && !op.ctl.signal.aborted) {
          op.abortT = now();
          log(`abort #${op.id}`);
          op.ctl.abort(op.reason);
        }
        break;
      }
      case "bad": {
        const bad = BAD_CALLS[act.which % BAD_CALLS.length]!;
        const op = start(act, "bad", () => bad.call(conn));
        op.desc = `bad ${bad.name}`;
        break;
      }
    }
  }

  // Every op with a bound settles by it, before the peer unblocks anything (close() may
  // linger until the peer's EOF, which comes at teardown).
  await settleBounded(tr, (o) => o.kind !== "close");
  // Teardown: the peer reads again and answers our FIN; a late TLS peer starts.
  tr.teardownT = now();
  log("teardown");
  peer.teardown();
  // The peer reads again: with nothing abnormal, every pending write and closeWrite completes.
  const abnormal = tr.rst !== undefined || tr.destroy !== undefined || tr.garbage !== undefined;
  const writing = (o: OpRec) =>
    o.status === "pending" && (WRITES.has(o.kind) || o.kind === "closeWrite");
  if (!abnormal && tr.closeCalls.length === 0) {
    const until = now() + WRITE_DRAIN_MS;
    while (tr.ops.some(writing) && now() < until) await sleep(10);
    tr.drainCheckT = now();
  }
  // closeWrite() resolved: the peer must see EOF without us calling close().
  if (
    tr.closeCalls.length === 0 &&
    !abnormal &&
    tr.ops.some((o) => o.kind === "closeWrite" && o.status === "ok")
  ) {
    const until = now() + 2000;
    while (tr.peerEnd === undefined && now() < until) await sleep(5);
  }
  // Wait for every op that must settle by itself (bounded), then close.
  await settleBounded(tr);
  await sleep(20);
  tr.cleanupT = now();
  tr.closeCalls.push(tr.cleanupT);
  tr.hsDoneAtClose ??= handshakeDone(conn);
  const closeOp = start({ a: "close" }, "close", () => conn.close());
  closeOp.cleanup = true;
  const until = now() + CLOSE_BOUND_MS + SLACK_MS;
  while (tr.ops.some((o) => o.status === "pending") && now() < until) await sleep(10);
  // The peer should see our FIN (and answer it); give the exchange a moment.
  const peerUntil = now() + 2000;
  const peerDone = () =>
    tr.peerClose !== undefined ||
    (tr.peerEnd !== undefined && peer.finished) ||
    tr.peerErr !== undefined ||
    peer.gone;
  while (!peerDone() && now() < peerUntil) await sleep(10);
}

/** Wait until every pending op with a bound has settled or is past its bound + SLACK_MS. */
async function settleBounded(tr: Trace, which: (o: OpRec) => boolean = () => true): Promise<void> {
  for (;;) {
    const t = now();
    const waiting = tr.ops.some((o) => {
      if (o.status !== "pending" || !which(o)) return false;
      const b = boundOf(o, tr);
      return b < Infinity && b + SLACK_MS > t;
    });
    if (!waiting) return;
    await sleep(5);
  }
}

function handshakeDone(conn: Conn): boolean {
  return conn instanceof TLSConn ? conn.state().handshakeComplete : true;
}

function snap(tr: Trace, conn: Conn): { t: number; okIds: number[]; unread: number } {
  return {
    t: now(),
    okIds: tr.ops.filter((o) => READS.has(o.kind) && o.status === "ok").map((o) => o.id),
    unread: conn.unreadBytes,
  };
}

// ------------------------------------------------------------------ bounds

/**
 * The first time a deadline for `dir` fires at or after `from`: the deadline in
 * force over each interval between setDeadline calls, and whether it passes.
 * With `hold`, a deadline counts only if it stayed in force `hold` ms past its
 * expiry (a deadline moved away within the same moment need not have fired); a negative
 * `hold` counts one moved away up to -hold ms before its expiry (it may have fired first).
 */
function deadlineFire(tr: Trace, dir: "r" | "w", from: number, hold = 0): number {
  const sets = tr.deadlines.filter((d) => d.dir === dir);
  let cur: number | null = null;
  let a = Number.NEGATIVE_INFINITY;
  for (let i = 0; i <= sets.length; i++) {
    const b = i < sets.length ? sets[i]!.t : Number.POSITIVE_INFINITY;
    const lo = Math.max(a, from);
    if (cur !== null && lo < b && Math.max(lo, cur) + hold < b) return Math.max(lo, cur);
    if (i < sets.length) {
      cur = sets[i]!.at;
      a = sets[i]!.t;
    }
  }
  return Number.POSITIVE_INFINITY;
}

/** How long a fired deadline must stay in force for the model to require that it failed an op. */
const DEADLINE_HOLD_MS = 50;

function dirOf(op: OpRec): "r" | "w" | null {
  if (READS.has(op.kind)) return "r";
  if (WRITES.has(op.kind) || op.kind === "closeWrite") return "w";
  return null;
}

/**
 * The deadline (for the op's direction) was already past at the call, for sure, and
 * nobody moved it before the op settled.
 */
function pastAtCall(tr: Trace, op: OpRec): boolean {
  const dir = dirOf(op);
  if (!dir) return false;
  const sets = tr.deadlines.filter((d) => d.dir === dir && d.t <= op.callT);
  const last = sets[sets.length - 1];
  const moved = tr.deadlines.some(
    (d) => d.dir === dir && d.t > op.callT && d.t <= (op.settleT ?? Infinity),
  );
  return !moved && last !== undefined && last.at !== null && last.at < op.callT - PAST_MARGIN_MS;
}

/** The time by which `op` must have settled (before SLACK_MS), from the causes the model knows. */
export function boundOf(op: OpRec, tr: Trace): number {
  return bound(op, tr).t;
}

/** The earliest cause that must settle `op`: when, why, and a tag for the rule id. */
function bound(op: OpRec, tr: Trace): { t: number; tag: string; why: string } {
  if (op.kind === "bad") return { t: op.callT, tag: "BAD-ARG", why: "bad argument" };
  if (op.kind === "close") {
    return { t: op.callT + CLOSE_BOUND_MS, tag: "CLOSE", why: "close() lingers ~2.3 s at most" };
  }
  const b: Array<{ t: number; tag: string; why: string }> = [];
  if (op.timeout !== undefined) {
    b.push({
      t: op.callT + op.timeout,
      tag: "TIMEOUT",
      why: `timeout ${op.timeout} ms from the call`,
    });
  }
  if (op.pre) b.push({ t: op.callT, tag: "ABORTED-SIGNAL", why: "already-aborted signal" });
  if (op.abortT !== undefined) {
    b.push({ t: Math.max(op.abortT, op.callT), tag: "ABORT", why: "signal aborted" });
  }
  const dir = dirOf(op);
  if (dir) {
    const f = deadlineFire(tr, dir, op.callT, DEADLINE_HOLD_MS);
    if (f < Infinity) {
      b.push({ t: f, tag: "DEADLINE", why: `${dir === "r" ? "read" : "write"} deadline` });
    }
  }
  if (tr.rst !== undefined) b.push({ t: Math.max(tr.rst, op.callT), tag: "RST", why: "peer RST" });
  if (tr.garbage !== undefined) {
    b.push({ t: Math.max(tr.garbage, op.callT), tag: "GARBAGE", why: "garbage on the TLS stream" });
  }
  if (tr.destroy !== undefined) {
    b.push({ t: Math.max(tr.destroy, op.callT), tag: "DESTROY", why: "peer closed its socket" });
  }
  if (tr.fin !== undefined && READS.has(op.kind)) {
    b.push({ t: Math.max(tr.fin, op.callT), tag: "FIN", why: "peer FIN" });
  }
  const closeAt = tr.closeCalls.find((t) => t >= op.callT) ?? tr.closeCalls[0];
  if (closeAt !== undefined)
    b.push({ t: Math.max(closeAt, op.callT), tag: "CLOSE", why: "close()" });
  let best = { t: Number.POSITIVE_INFINITY, tag: "", why: "" };
  for (const x of b) if (x.t < best.t) best = x;
  return best;
}

// ------------------------------------------------------------------ checker

export interface Violation {
  rule: string;
  detail: string;
}

const utf8 = new TextDecoder("utf-8");

function codeOf(e: unknown): string | undefined {
  return e instanceof TlsnetError ? e.code : undefined;
}

export function show(e: unknown): string {
  if (!(e instanceof Error)) return `non-Error ${String(e)}`;
  const extra: string[] = [];
  const x = e as Error & { code?: unknown; op?: unknown; reason?: unknown; partial?: unknown };
  if (x.code !== undefined) extra.push(String(x.code));
  if (x.op !== undefined) extra.push(`op=${String(x.op)}`);
  if (x.reason !== undefined) extra.push(`reason=${String(x.reason)}`);
  if (x.partial !== undefined) extra.push(`partial=${String(x.partial)}`);
  return `${e.name}${extra.length ? `[${extra.join(" ")}]` : ""}: ${e.message}`;
}

function showValue(v: unknown, op: OpRec): string {
  if (v === null) return "null";
  if (v === undefined) return "ok";
  if (Buffer.isBuffer(v))
    return `${v.length} bytes ${JSON.stringify(v.subarray(0, 40).toString("latin1"))}`;
  if (typeof v === "number" && op.into) {
    return `${v} bytes ${JSON.stringify(Buffer.from(op.into.subarray(0, v)).toString("latin1"))}`;
  }
  return JSON.stringify(v);
}

/** Check a trace against the model; returns every violation found. */
export function checkTrace(tr: Trace): Violation[] {
  const v: Violation[] = [];
  // Rules broken by closeWrite() get their own ids: its options are new (issue 10).
  const add = (rule: string, detail: string) =>
    v.push({
      rule:
        /^#\d+ closeWrite\(/.test(detail) && !rule.startsWith("CLOSEWRITE-")
          ? `CLOSEWRITE-${rule}`
          : rule,
      detail,
    });
  const rel = (t: number | undefined) =>
    t === undefined ? "never" : `${(t - tr.t0).toFixed(0)} ms`;

  if (tr.driverError) add("DRIVER", tr.driverError);
  for (const e of tr.unhandled) add("UNHANDLED-REJECTION", show(e));
  for (const e of tr.uncaught) add("UNCAUGHT-EXCEPTION", show(e));
  if (
    tr.fdBaseline !== undefined &&
    tr.fdAfter !== undefined &&
    tr.fdBaseline >= 0 &&
    tr.fdAfter > tr.fdBaseline
  ) {
    add("FD-LEAK", `${tr.fdAfter - tr.fdBaseline} file descriptors still open 3 s after the run`);
  }

  const isTLS = tr.cfg.kind === "tls";
  const lazy = isTLS && tr.cfg.side === "server";
  // The peer's stream, and when each byte count was reached (for data liveness).
  const valid = tr.sends.filter((s) => s.valid);
  const S = Buffer.concat(valid.map((s) => s.data));
  const reachedAt = (n: number): number => {
    let acc = 0;
    for (const s of valid) {
      acc += s.data.length;
      if (acc >= n) return s.t;
    }
    return Number.POSITIVE_INFINITY;
  };
  const eofAt = Math.min(tr.fin ?? Infinity, tr.destroy ?? Infinity);
  const before = (t: number | undefined, limit: number | undefined) =>
    t !== undefined && limit !== undefined && t <= limit;
  const closeBefore = (limit: number | undefined) =>
    limit !== undefined && tr.closeCalls.some((t) => t <= limit);
  const reasons = new Map<unknown, OpRec>();
  for (const op of tr.ops) if (op.reason) reasons.set(op.reason, op);

  // ---- hang / late: every op settles by its bound.
  for (const op of tr.ops) {
    const bd = bound(op, tr);
    if (op.status === "pending") {
      add(
        "HANG",
        `#${op.id} ${op.desc} (called at ${rel(op.callT)}) never settled` +
          (op.cleanup ? " (the final close())" : ", not even after close()"),
      );
    } else if (bd.t < Infinity && op.settleT! > bd.t + SLACK_MS) {
      add(
        `LATE-${bd.tag}`,
        `#${op.id} ${op.desc}: had to settle by ${rel(bd.t)} (${bd.why}), settled at ${rel(op.settleT)}`,
      );
    }
  }

  // ---- reads: replay in call order against S.
  let pos = 0;
  let nullAt: number | undefined; // settle time of the first read that returned EOF
  let prevSettle = 0; // all earlier reads settled by then (for data liveness)
  let earlierPending = false;
  const consumedBy = new Map<number, number>();
  const deadlineErrs: OpRec[] = [];
  for (const op of tr.ops) {
    if (
      op.status !== "pending" &&
      op.status === "err" &&
      codeOf(op.err) === "ERR_TLSNET_DEADLINE"
    ) {
      deadlineErrs.push(op);
    }
  }

  for (const op of tr.ops) {
    const isRead = READS.has(op.kind);
    // -- errors common to every kind
    if (op.kind === "bad") {
      // rules.md says "thrown synchronously"; docs/api.md says "throw synchronously or reject
      // at once, following Node". Either is accepted; the bound makes "at once" strict.
      if (op.status === "ok") add("BAD-ARG-ACCEPTED", `${op.desc} succeeded`);
      else if (
        op.status === "err" &&
        !(op.err instanceof TypeError || op.err instanceof RangeError)
      ) {
        add("BAD-ARG-CLASS", `${op.desc} failed with ${show(op.err)}, not TypeError/RangeError`);
      }
      continue;
    }
    if (op.status === "pending") {
      if (isRead) earlierPending = true;
      continue;
    }
    const settle = op.settleT!;
    if (op.sync) {
      add("SYNC-THROW", `#${op.id} ${op.desc} threw synchronously: ${show(op.err)}`);
      continue;
    }
    // Data liveness: once the bytes a read needs have arrived and the reads before it
    // are done, it settles (it must not wait for more than it needs).
    if (
      isRead &&
      !earlierPending &&
      !(op.status === "err" && codeOf(op.err) === "ERR_TLSNET_RESET")
    ) {
      const need = needOf(op, S, pos);
      let ready = Math.max(op.callT, prevSettle, reachedAt(pos + need));
      if (lazy) ready = Math.max(ready, tr.peerSecure ?? Infinity);
      if (ready < Infinity && settle > ready + SLACK_MS) {
        add(
          "LATE-WITH-DATA",
          `#${op.id} ${op.desc}: the ${need} byte(s) it needed had arrived and earlier reads were done by ${rel(ready)}; it settled at ${rel(settle)} (${op.status === "ok" ? "ok" : show(op.err)})`,
        );
      }
    }
    const closedBeforeCall = closeBefore(op.callT) && !op.cleanup;
    const hsFailed = lazy && op.hsDone === false;

    if (op.status === "err") {
      const e = op.err;
      const code = codeOf(e);
      const foreign = reasons.get(e);
      if (foreign && foreign !== op) {
        add(
          "FOREIGN-ABORT",
          `#${op.id} ${op.desc} rejected with the abort reason of #${foreign.id} ${foreign.desc}: an op's signal cancels that op only`,
        );
        continue;
      }
      if (op.reason && e === op.reason) {
        if (!op.pre && !(op.abortT !== undefined && op.abortT <= settle)) {
          add(
            "ABORT-SPURIOUS",
            `#${op.id} ${op.desc} rejected with its abort reason before the abort`,
          );
        }
        continue;
      }
      if (op.pre && !closedBeforeCall) {
        add(
          "ABORT-PRE",
          `#${op.id} ${op.desc} had an already-aborted signal but rejected with ${show(e)}, not signal.reason`,
        );
      }
      if (!(e instanceof TlsnetError)) {
        add("ERR-CLASS", `#${op.id} ${op.desc} rejected with ${show(e)}: not a TlsnetError`);
        continue;
      }
      if (!/^ERR_TLSNET_[A-Z_]+$/.test(e.code)) {
        add("ERR-CODE", `#${op.id} ${op.desc} rejected with code ${e.code}: ${show(e)}`);
        continue;
      }
      if (op.kind === "close") {
        add("CLOSE-REJECTED", `#${op.id} close() rejected: ${show(e)}`);
        continue;
      }
      switch (code) {
        case "ERR_TLSNET_CLOSED": {
          const ok =
            closeBefore(settle) ||
            ((WRITES.has(op.kind) || op.kind === "closeWrite") &&
              tr.closeWriteCalls.some((t) => t < op.callT));
          if (!ok)
            add("CLOSED-SPURIOUS", `#${op.id} ${op.desc}: ${show(e)} but close() was not called`);
          break;
        }
        case "ERR_TLSNET_DEADLINE": {
          const dir = dirOf(op);
          const want = dir === "r" ? "read" : "write";
          const opName = (e as TlsnetError & { op?: string }).op;
          if (opName !== want) {
            add(
              "DEADLINE-OP",
              `#${op.id} ${op.desc}: DeadlineExceededError op "${opName}", expected "${want}"`,
            );
          }
          // A deadline replaced within WALL_CLOCK_SLACK_MS of its expiry may have fired first.
          const fired = dir
            ? deadlineFire(tr, dir, op.callT, -WALL_CLOCK_SLACK_MS) <= settle + EARLY_MS
            : false;
          const timed = op.timeout !== undefined && op.callT + op.timeout <= settle + EARLY_MS;
          const permanent =
            dir === "w" &&
            deadlineErrs.some((d) => d !== op && dirOf(d) === "w" && d.settleT! <= settle);
          if (!fired && !timed && !permanent) {
            add(
              "DEADLINE-SPURIOUS",
              `#${op.id} ${op.desc}: ${show(e)} at ${rel(settle)}, but no ${want} deadline or timeout of its own had expired` +
                (dir === "r" && deadlineFire(tr, "w", op.callT) <= settle
                  ? " (a WRITE deadline had)"
                  : ""),
            );
          }
          break;
        }
        case "ERR_TLSNET_UNEXPECTED_EOF": {
          const partial = (e as TlsnetError & { partial?: number }).partial;
          const rest = S.length - pos;
          let ok = false;
          if (hsFailed) ok = false;
          else if (op.kind === "readExactly") {
            ok = before(eofAt, settle) && rest < (op.act as { n: number }).n;
          } else if (op.kind === "readUntil") {
            const d = Buffer.from((op.act as { delim: string }).delim, "latin1");
            ok = before(eofAt, settle) && S.indexOf(d, pos) < 0;
          }
          if (!ok) {
            add(
              "EOF-SPURIOUS",
              `#${op.id} ${op.desc}: ${show(e)}; stream position ${pos}, ${rest} of ${S.length} bytes left, peer EOF at ${rel(eofAt < Infinity ? eofAt : undefined)}${hsFailed ? ", during the TLS handshake" : ""}`,
            );
          } else if (tr.rst === undefined && partial !== rest) {
            add(
              "EOF-PARTIAL",
              `#${op.id} ${op.desc}: partial=${partial}, but ${rest} bytes were left`,
            );
          }
          break;
        }
        case "ERR_TLSNET_LIMIT": {
          if (!limitAllowed(op, S, pos, tr)) {
            add(
              "LIMIT-SPURIOUS",
              `#${op.id} ${op.desc}: ${show(e)}; the stream from position ${pos} is ${JSON.stringify(S.subarray(pos, pos + 40).toString("latin1"))}${before(eofAt, op.callT) ? " then EOF" : ""}`,
            );
          }
          break;
        }
        case "ERR_TLSNET_RESET": {
          const cause =
            before(tr.rst, settle) || before(tr.destroy, settle) || before(tr.garbage, settle);
          if (!cause)
            add("RESET-SPURIOUS", `#${op.id} ${op.desc}: ${show(e)} but the peer did not reset`);
          else if (hsFailed && tr.garbage === undefined) {
            add(
              "HANDSHAKE-RESET-CLASS",
              `#${op.id} ${op.desc}: the peer reset/closed during the TLS handshake; expected TLSError reason "ECONNRESET", got ${show(e)}`,
            );
          }
          if (isRead && cause) {
            const s = tr.snaps.find((x) => x.t <= settle);
            if (s) {
              const lb = s.okIds.reduce((n, id) => n + (consumedBy.get(id) ?? 0), 0) + s.unread;
              const need = needOf(op, S, pos);
              if (pos + need <= lb) {
                add(
                  "RESET-LOST-BYTES",
                  `#${op.id} ${op.desc}: ${show(e)} though ${lb - pos} buffered bytes (needs ${need}) had arrived before the reset: they must stay readable`,
                );
              }
            }
          }
          break;
        }
        case "ERR_TLSNET_TLS": {
          const reason = (e as TlsnetError & { reason?: string }).reason;
          const hsReset =
            hsFailed &&
            (before(tr.rst, settle) || before(tr.fin, settle) || before(tr.destroy, settle));
          if (before(tr.garbage, settle) && isTLS) break;
          if (hsReset && reason === "ECONNRESET") break;
          add(
            hsReset ? "HANDSHAKE-RESET-REASON" : "TLS-SPURIOUS",
            `#${op.id} ${op.desc}: ${show(e)}` +
              (hsReset
                ? ' (a peer that closes/resets during the handshake gives reason "ECONNRESET")'
                : ""),
          );
          break;
        }
        case "ERR_TLSNET_HANDSHAKE_TIMEOUT":
          add(
            "HANDSHAKE-TIMEOUT-CLASS",
            `#${op.id} ${op.desc}: ${show(e)}; a per-call timeout or deadline that cuts the lazy handshake short rejects that op with DeadlineExceededError (op "${dirOf(op) === "r" ? "read" : "write"}")`,
          );
          break;
        default:
          add("ERR-UNEXPECTED", `#${op.id} ${op.desc}: ${show(e)} (no cause in this run)`);
      }
      // EOF is sticky: after a null, reads do not fail with reset/TLS errors.
      if (
        isRead &&
        nullAt !== undefined &&
        nullAt <= op.callT &&
        (code === "ERR_TLSNET_RESET" || code === "ERR_TLSNET_TLS")
      ) {
        add(
          "EOF-NOT-STICKY",
          `#${op.id} ${op.desc}: ${show(e)} after a read already returned EOF (null)`,
        );
      }
      if (isRead) prevSettle = Math.max(prevSettle, settle);
      continue;
    }

    // ---- success
    if (op.kind === "close") continue;
    if (op.pre)
      add("ABORT-PRE", `#${op.id} ${op.desc} had an already-aborted signal but succeeded`);
    if (closedBeforeCall) add("AFTER-CLOSE", `#${op.id} ${op.desc} succeeded after close()`);
    if (pastAtCall(tr, op)) {
      const stickyNull = nullAt !== undefined && op.value === null;
      // A second closeWrite() has nothing left to send: it may share the first one's outcome.
      const repeated =
        op.kind === "closeWrite" &&
        tr.ops.some((o) => o.kind === "closeWrite" && o.id < op.id && o.status === "ok");
      if (!stickyNull && !repeated)
        add(
          "DEADLINE-PAST",
          `#${op.id} ${op.desc} succeeded though its deadline had passed before the call`,
        );
    }
    if (WRITES.has(op.kind) && closeWriteDoneBefore(tr, op.callT)) {
      add("WRITE-AFTER-CLOSEWRITE", `#${op.id} ${op.desc} succeeded after closeWrite()`);
    }
    if (!isRead) continue;

    const r = replayRead(op, S, pos, before(eofAt, settle));
    if (r.violation) add(r.rule ?? "BYTES", `#${op.id} ${op.desc}: ${r.violation}`);
    if (r.eof) {
      if (hsFailed)
        add("EOF-SPURIOUS", `#${op.id} ${op.desc} returned EOF though the TLS handshake failed`);
      nullAt ??= settle;
    } else if (nullAt !== undefined && nullAt <= op.callT && r.consumed > 0) {
      add("EOF-NOT-STICKY", `#${op.id} ${op.desc} returned data after a read returned EOF`);
    }
    consumedBy.set(op.id, r.consumed);
    pos += r.consumed;
    prevSettle = Math.max(prevSettle, settle);
  }

  // ---- the tlsnet -> peer stream
  checkWrites(tr, add, rel);

  // ---- the peer saw the connection end only for a reason.
  const peerEnded = Math.min(tr.peerEnd ?? Infinity, tr.peerErr?.t ?? Infinity);
  if (peerEnded < Infinity) {
    const causes = [
      ...tr.closeCalls,
      ...tr.closeWriteCalls,
      tr.rst,
      tr.destroy,
      tr.garbage,
      lazy && tr.fin !== undefined && (tr.peerSecure === undefined || tr.fin < tr.peerSecure)
        ? tr.fin
        : undefined,
    ].filter((t): t is number => t !== undefined);
    if (!causes.some((t) => t <= peerEnded)) {
      add(
        "CONN-KILLED",
        `the peer saw the connection end at ${rel(peerEnded)} (${tr.peerErr ? tr.peerErr.code : "EOF"}) though we never called close()/closeWrite() and nothing fatal happened`,
      );
    }
  }
  // An EOF where the peer only reset: its own id (a reset reported as a clean end).
  if (tr.rst !== undefined && eofAt === Infinity) {
    for (const x of v)
      if (x.rule.endsWith("EOF-SPURIOUS")) x.rule = x.rule.replace("EOF-SPURIOUS", "RESET-AS-EOF");
  }
  return v;
}

/** How many bytes from `pos` a read needs before it can return (Infinity: needs EOF or more than S). */
function needOf(op: OpRec, S: Buffer, pos: number): number {
  const act = op.act as { max?: number; n?: number; delim?: string; maxBytes?: number };
  switch (op.kind) {
    case "read":
    case "readInto":
      return 1;
    case "readExactly":
      return act.n!;
    case "readUntil": {
      const d = Buffer.from(act.delim!, "latin1");
      const i = S.indexOf(d, pos);
      const end = i < 0 ? Infinity : i + d.length - pos;
      return end <= (act.maxBytes ?? MiB) ? end : Infinity;
    }
    case "readLine": {
      const i = S.indexOf(0x0a, pos);
      const end = i < 0 ? Infinity : i + 1 - pos;
      return end <= (act.maxBytes ?? MiB) ? end : Infinity;
    }
    default:
      return Infinity;
  }
}

function limitAllowed(op: OpRec, S: Buffer, pos: number, tr: Trace): boolean {
  const act = op.act as { delim?: string; maxBytes?: number };
  const rest = S.length - pos;
  const eofBeforeCall = tr.fin !== undefined && tr.fin <= op.callT;
  switch (op.kind) {
    case "readUntil": {
      const max = act.maxBytes ?? MiB;
      const d = Buffer.from(act.delim!, "latin1");
      const i = S.indexOf(d, pos);
      if (i >= 0) return i + d.length - pos > max;
      return rest + d.length > max;
    }
    case "readLine": {
      const max = act.maxBytes ?? MiB;
      const i = S.indexOf(0x0a, pos);
      if (i >= 0) return i + 1 - pos > max; // the line with its "\n" does not fit
      // Unterminated: at EOF the last line is returned when within maxBytes.
      return eofBeforeCall ? rest > max : rest >= max;
    }
    case "readAll":
      return act.maxBytes !== undefined && rest > act.maxBytes;
    default:
      return false;
  }
}

/** What a successful read must have returned at `pos`; how much it consumed. */
function replayRead(
  op: OpRec,
  S: Buffer,
  pos: number,
  eofBySettle: boolean,
): { consumed: number; eof?: boolean; violation?: string; rule?: string } {
  const act = op.act as {
    max?: number;
    size?: number;
    n?: number;
    delim?: string;
    maxBytes?: number;
  };
  const v = op.value;
  const rest = S.length - pos;
  const expectAt = (got: Buffer, rule = "BYTES") => {
    const want = S.subarray(pos, pos + got.length);
    if (!want.equals(got)) {
      return {
        consumed: got.length,
        rule: want.length < got.length ? "BYTES-INVENTED" : rule,
        violation: `returned ${JSON.stringify(got.toString("latin1"))} but the stream at position ${pos} is ${JSON.stringify(want.toString("latin1"))}`,
      };
    }
    return { consumed: got.length };
  };
  const nullResult = () => {
    if (!eofBySettle) {
      return {
        consumed: 0,
        eof: true,
        rule: "EOF-SPURIOUS",
        violation: "returned EOF but the peer never sent FIN",
      };
    }
    if (rest > 0) {
      return {
        consumed: 0,
        eof: true,
        rule: "LOST-BYTES",
        violation: `returned EOF with ${rest} of the peer's ${S.length} bytes never returned`,
      };
    }
    return { consumed: 0, eof: true };
  };
  switch (op.kind) {
    case "read": {
      if (v === null) return nullResult();
      const b = v as Buffer;
      if (b.length < 1 || b.length > act.max!) {
        return { consumed: b.length, rule: "READ-SIZE", violation: `returned ${b.length} bytes` };
      }
      return expectAt(b);
    }
    case "readInto": {
      if (v === null) return nullResult();
      const n = v as number;
      if (!Number.isInteger(n) || n < 1 || n > act.size!) {
        return { consumed: 0, rule: "READ-SIZE", violation: `returned count ${n}` };
      }
      return expectAt(Buffer.from(op.into!.subarray(0, n)));
    }
    case "readExactly": {
      const b = v as Buffer;
      if (b.length !== act.n) {
        return { consumed: b.length, rule: "READ-SIZE", violation: `returned ${b.length} bytes` };
      }
      return expectAt(b);
    }
    case "readUntil": {
      const b = v as Buffer;
      const d = Buffer.from(act.delim!, "latin1");
      const i = S.indexOf(d, pos);
      if (i < 0)
        return {
          ...expectAt(b),
          rule: "BYTES",
          violation: `returned ${JSON.stringify(b.toString("latin1"))} but the stream has no delimiter after position ${pos}`,
        };
      const want = S.subarray(pos, i + d.length);
      if (!want.equals(b)) {
        return {
          consumed: b.length,
          rule: "BYTES",
          violation: `returned ${JSON.stringify(b.toString("latin1"))}, expected ${JSON.stringify(want.toString("latin1"))}`,
        };
      }
      if (want.length > (act.maxBytes ?? MiB)) {
        return {
          consumed: b.length,
          rule: "LIMIT-IGNORED",
          violation: `returned ${b.length} bytes, over maxBytes`,
        };
      }
      return { consumed: b.length };
    }
    case "readLine": {
      if (v === null) return nullResult();
      const max = act.maxBytes ?? MiB;
      const i = S.indexOf(0x0a, pos);
      let line: Buffer;
      let consumed: number;
      if (i >= 0) {
        consumed = i + 1 - pos;
        line = S.subarray(pos, i);
        if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, -1);
        if (line.length > max) {
          return {
            consumed,
            rule: "LIMIT-IGNORED",
            violation: `returned a line of ${line.length} bytes, over maxBytes ${max}`,
          };
        }
      } else {
        if (!eofBySettle) {
          return {
            consumed: rest,
            rule: "BYTES",
            violation: `returned ${JSON.stringify(v)} but the stream has no line end after position ${pos} and no EOF`,
          };
        }
        consumed = rest;
        line = S.subarray(pos);
        if (line.length > max) {
          return {
            consumed,
            rule: "LIMIT-IGNORED",
            violation: `returned the last line of ${line.length} bytes, over maxBytes ${max}`,
          };
        }
      }
      const want = utf8.decode(line);
      if (v !== want) {
        return {
          consumed,
          rule: "READLINE-VALUE",
          violation: `returned ${JSON.stringify(v)}, expected ${JSON.stringify(want)} (stream at ${pos}: ${JSON.stringify(S.subarray(pos, pos + 40).toString("latin1"))})`,
        };
      }
      return { consumed };
    }
    case "readAll": {
      const b = v as Buffer;
      if (!eofBySettle) {
        return {
          consumed: b.length,
          rule: "EOF-SPURIOUS",
          violation: "readAll resolved but the peer never sent FIN",
        };
      }
      const want = S.subarray(pos);
      if (!want.equals(b)) {
        return {
          consumed: b.length,
          rule: b.length < want.length ? "LOST-BYTES" : "BYTES",
          violation: `returned ${b.length} bytes ${JSON.stringify(b.subarray(0, 40).toString("latin1"))}, expected the ${want.length} remaining ${JSON.stringify(want.subarray(0, 40).toString("latin1"))}`,
        };
      }
      if (act.maxBytes !== undefined && b.length > act.maxBytes) {
        return {
          consumed: b.length,
          rule: "LIMIT-IGNORED",
          violation: `returned ${b.length} bytes, over maxBytes`,
        };
      }
      return { consumed: b.length, eof: b.length === 0 };
    }
    default:
      return { consumed: 0 };
  }
}

/** A closeWrite() called before `t` that succeeded: writes after it must fail. */
function closeWriteDoneBefore(tr: Trace, t: number): boolean {
  return tr.ops.some((o) => o.kind === "closeWrite" && o.callT < t && o.status === "ok");
}

/** The peer's received bytes against our writes. */
function checkWrites(
  tr: Trace,
  add: (rule: string, detail: string) => void,
  rel: (t: number | undefined) => string,
): void {
  const R = Buffer.concat(tr.peerRecv);
  type W = { op: OpRec; status: "certain" | "none" | "maybe" };
  const ws: W[] = [];
  let broken = false;
  for (const op of tr.ops) {
    if (op.kind === "closeWrite" && op.status === "err") {
      const c = codeOf(op.err);
      if (c === "ERR_TLSNET_RESET" || c === "ERR_TLSNET_TLS" || c === "ERR_TLSNET_DEADLINE")
        broken = true;
    }
    if (!WRITES.has(op.kind) || !op.data || op.data.length === 0) continue;
    if (op.status === "ok") ws.push({ op, status: "certain" });
    else {
      const atCall =
        op.sync ||
        op.pre ||
        tr.closeCalls.some((t) => t < op.callT) ||
        closeWriteDoneBefore(tr, op.callT) ||
        pastAtCall(tr, op);
      ws.push({ op, status: atCall ? "none" : "maybe" });
      const c = codeOf(op.err);
      if (
        op.status === "pending" ||
        c === "ERR_TLSNET_RESET" ||
        c === "ERR_TLSNET_TLS" ||
        (c === "ERR_TLSNET_DEADLINE" && !atCall)
      ) {
        broken = true;
      }
    }
  }
  const abnormal =
    tr.rst !== undefined || tr.destroy !== undefined || tr.garbage !== undefined || broken;
  // A close() with a paused peer lingers ~2 s at most; after that losing the tail is allowed.
  const firstClose = tr.closeCalls[0];
  const lingerOk = firstClose === undefined || (tr.teardownT ?? Infinity) - firstClose < 1500;
  // TLS server side: a peer that never finished its handshake gets no stream at all.
  // (close() during our handshake has no stream to finish: the peer may see a reset.)
  const handshook =
    !(tr.cfg.kind === "tls" && tr.cfg.side === "server") ||
    (tr.peerSecure !== undefined && tr.hsDoneAtClose !== false);
  const complete = !abnormal && lingerOk && handshook;

  // Depth-first match: certain writes in, none out, maybe either; the last one may be cut short.
  const matches = (complete: boolean, noneIsMaybe: boolean): boolean => {
    let steps = 0;
    const match = (i: number, at: number): boolean => {
      if (++steps > 20_000) return true; // undecidable here: do not accuse
      if (at === R.length) {
        if (!complete) return true;
        for (let j = i; j < ws.length; j++) if (ws[j]!.status === "certain") return false;
        return true;
      }
      if (i === ws.length) return false;
      const w = ws[i]!;
      const d = w.op.data!;
      const take = (): boolean => {
        const n = Math.min(d.length, R.length - at);
        if (!R.subarray(at, at + n).equals(d.subarray(0, n))) return false;
        if (n < d.length) return !complete; // cut short: only when the stream broke
        return match(i + 1, at + n);
      };
      if (w.status === "certain") return take();
      if (w.status === "none" && !noneIsMaybe) return match(i + 1, at);
      return take() || match(i + 1, at);
    };
    return match(0, 0);
  };
  if (!matches(complete, false)) {
    const lines = ws
      .map(
        (w) =>
          `#${w.op.id} ${w.status} ${w.op.data!.length} bytes ${JSON.stringify(w.op.data!.subarray(0, 24).toString("latin1"))}`,
      )
      .join("; ");
    const closed = tr.ops.find((o) => o.kind === "close" && !o.cleanup);
    const rule = matches(complete, true)
      ? "REJECTED-WRITE-SENT"
      : complete && matches(false, false)
        ? "WRITE-LOST"
        : "WRITE-CORRUPT";
    add(
      rule,
      `the peer received ${R.length} bytes ${JSON.stringify(R.subarray(0, 60).toString("latin1"))}${R.length > 60 ? "…" : ""}, ` +
        `which is not ${complete ? "exactly" : "a prefix of"} our writes in order [${lines}]` +
        (rule === "REJECTED-WRITE-SENT" ? " (a write rejected at its call was sent)" : "") +
        (closed ? ` (close() called at ${rel(closed.callT)})` : ""),
    );
  }
  if (complete && tr.peerEnd === undefined) {
    add(
      "NO-EOF",
      `nothing went wrong, we closed at ${rel(tr.closeCalls[0])}, but the peer never saw EOF` +
        (tr.peerErr ? ` (it got ${tr.peerErr.code} at ${rel(tr.peerErr.t)})` : ""),
    );
  }
  // closeWrite() resolved: the peer sees EOF without a close() (checked only when close() came last).
  if (tr.drainCheckT !== undefined) {
    for (const op of tr.ops) {
      if (!(WRITES.has(op.kind) || op.kind === "closeWrite")) continue;
      if (op.settleT === undefined || op.settleT > tr.drainCheckT) {
        add(
          "WRITE-STUCK",
          `#${op.id} ${op.desc} was still pending ${WRITE_DRAIN_MS} ms after the peer read everything again (nothing went wrong; settled ${op.settleT === undefined ? "never" : `at ${rel(op.settleT)}, after close()`})`,
        );
      }
    }
  }
  const cw = tr.ops.find(
    (o) => o.kind === "closeWrite" && o.status === "ok" && o.settleT! < (tr.cleanupT ?? Infinity),
  );
  if (
    cw &&
    tr.ops.every((o) => o.kind !== "close" || o.cleanup) &&
    tr.rst === undefined &&
    tr.destroy === undefined &&
    tr.garbage === undefined
  ) {
    if (tr.peerEnd === undefined || tr.peerEnd > (tr.cleanupT ?? Infinity)) {
      add(
        "CLOSEWRITE-NO-FIN",
        `#${cw.id} ${cw.desc} resolved at ${rel(cw.settleT)} but the peer saw no EOF before close() at ${rel(tr.cleanupT)}`,
      );
    }
  }
}

// ------------------------------------------------------------------ properties

export interface ModelRunOptions {
  numRuns: number;
  seed?: number | undefined;
  path?: string | undefined;
  /** After the first failure, stop shrinking after this long (the shrunk-so-far case is reported). */
  shrinkBudgetMs?: number;
  /** Start no new run after this long (runs so far count; a failure found is still shrunk). */
  timeLimitMs?: number;
  maxActions?: number;
  /** Rules to ignore (exploration only: to look for the next bug while one is known). */
  ignore?: ReadonlySet<string>;
  onRun?: (violations: Violation[]) => void;
}

export interface ModelResult {
  name: string;
  failed: boolean;
  numRuns: number;
  seed: number;
  path: string | null;
  counterexample: [Setup, Action[]] | null;
  report: string;
  ms: number;
  /** Sequences actually run (shrinking included; runs skipped by a time limit excluded). */
  executed: number;
}

/** Is `rule` in the ignore list ("LATE-*" ignores every LATE- rule)? */
function ignored(list: ReadonlySet<string> | undefined, rule: string): boolean {
  if (!list) return false;
  for (const x of list)
    if (x === rule || (x.endsWith("*") && rule.startsWith(x.slice(0, -1)))) return true;
  return false;
}

export function configName(cfg: ModelConfig): string {
  return `${cfg.kind}-${cfg.side}`;
}

/** Thrown by the property: the violations and the trace that shows them. */
export class ModelViolation extends Error {
  constructor(
    readonly violations: Violation[],
    readonly trace: Trace,
  ) {
    super(
      `${violations.map((x) => `[${x.rule}] ${x.detail}`).join("\n")}\n--- trace ---\n${tr2text(trace)}`,
    );
    this.name = "ModelViolation";
  }
}

function tr2text(tr: Trace): string {
  return tr.log.slice(0, 200).join("\n");
}

/** Run the model property for one config; never throws, returns what happened. */
export async function runModel(cfg: ModelConfig, o: ModelRunOptions): Promise<ModelResult> {
  const env = await createEnv(cfg);
  const name = configName(cfg);
  const arbs = arbitraries(cfg, o.maxActions);
  const t0 = now();
  let firstFailure: number | undefined;
  let executed = 0;
  const prop = fc.asyncProperty(arbs.setup, arbs.actions, async (setup, actions) => {
    if (
      firstFailure !== undefined &&
      o.shrinkBudgetMs !== undefined &&
      now() - firstFailure > o.shrinkBudgetMs
    ) {
      return; // out of shrinking budget: report the smallest failure so far
    }
    if (firstFailure === undefined && o.timeLimitMs !== undefined && now() - t0 > o.timeLimitMs) {
      return; // out of time: the remaining runs pass without running
    }
    executed++;
    const trace = await runSequence(env, setup, actions);
    const vs = checkTrace(trace).filter((x) => !ignored(o.ignore, x.rule));
    o.onRun?.(vs);
    if (vs.length > 0) {
      firstFailure ??= now();
      throw new ModelViolation(vs, trace);
    }
  });
  try {
    const params: fc.Parameters<[Setup, Action[]]> = { numRuns: o.numRuns, endOnFailure: false };
    if (o.seed !== undefined) params.seed = o.seed;
    if (o.path !== undefined) params.path = o.path;
    const d = await fc.check(prop, params);
    let report = "";
    if (d.failed) {
      const err = d.errorInstance;
      const repro = `FC_PROP=${name} FC_SEED=${d.seed} FC_PATH=${d.counterexamplePath ?? ""}`;
      report =
        `model property ${name} failed after ${d.numRuns} run(s), shrunk ${d.numShrinks} time(s)\n` +
        `reproduce: ${repro}\n` +
        `counterexample: ${fc.stringify(d.counterexample)}\n` +
        (err instanceof Error ? err.message : String(err));
    }
    return {
      name,
      failed: d.failed,
      numRuns: d.numRuns,
      seed: d.seed,
      path: d.counterexamplePath,
      counterexample: d.counterexample,
      report,
      ms: now() - t0,
      executed,
    };
  } finally {
    await env.close();
  }
}

export const CONFIGS: ModelConfig[] = [
  { kind: "tcp", side: "server" },
  { kind: "tcp", side: "client" },
  { kind: "tls", side: "server" },
  { kind: "tls", side: "client" },
];
