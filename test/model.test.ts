/**
 * Model-based tests that try to break Conn: random sequences of peer actions
 * (sends in random splits, FIN, RST, destroy, stalls, garbage under TLS, a late
 * TLS start) and user calls (every read kind, write, closeWrite, close,
 * deadlines, per-call timeouts, aborts, bad arguments) over real loopback TCP
 * and TLS, checked against a reference model of both byte streams and the
 * rules in docs/api.md (see test/helpers/model.ts for the model and the rule ids).
 *
 * Seeded: each property has a fixed seed. A failure prints the seed, the path
 * and the shrunk counterexample; replay it with
 *   FC_PROP=tls-server FC_SEED=<seed> FC_PATH=<path> node --import tsx --test test/model.test.ts
 * FC_RUNS=<n> changes the number of runs per property; scripts/fuzz.ts runs
 * the same properties for longer.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DeadlineExceededError } from "../src/index.ts";
import {
  type Action,
  CONFIGS,
  checkTrace,
  configName,
  createEnv,
  type ModelConfig,
  type OpRec,
  runModel,
  runSequence,
  type Setup,
  type Trace,
} from "./helpers/model.ts";

/** Runs per property (400 in all) and their fixed seeds. */
const PLAN: Record<string, { runs: number; seed: number }> = {
  "tcp-server": { runs: 100, seed: 0x10ca1 },
  "tcp-client": { runs: 80, seed: 0x10ca2 },
  "tls-server": { runs: 120, seed: 0x10ca3 },
  "tls-client": { runs: 100, seed: 0x10ca4 },
};

const only = process.env.FC_PROP;
const seedEnv = process.env.FC_SEED;
const pathEnv = process.env.FC_PATH;
const runsEnv = process.env.FC_RUNS;

describe("model-based: random peer and user actions against the reference model", () => {
  for (const cfg of CONFIGS) {
    const name = configName(cfg);
    const plan = PLAN[name]!;
    const seed = seedEnv !== undefined && only === name ? Number(seedEnv) : plan.seed;
    const runs = runsEnv !== undefined ? Number(runsEnv) : plan.runs;
    test(`${name}: ${runs} sequences (seed ${seed})`, {
      skip: only !== undefined && only !== name ? `FC_PROP=${only}` : false,
      timeout: 600_000,
    }, async (t) => {
      const r = await runModel(cfg, {
        numRuns: runs,
        seed,
        path: only === name ? pathEnv : undefined,
        maxActions: 14,
        shrinkBudgetMs: 30_000,
      });
      t.diagnostic(
        `${name}: ${r.executed} sequences in ${(r.ms / 1000).toFixed(1)} s, seed ${r.seed}`,
      );
      if (r.failed) assert.fail(r.report);
    });
  }
});

// ------------------------------------------------------------------ shrunk counterexamples

const TCP_S: ModelConfig = { kind: "tcp", side: "server" };
const TCP_C: ModelConfig = { kind: "tcp", side: "client" };
const TLS_S: ModelConfig = { kind: "tls", side: "server" };
const TLS_C: ModelConfig = { kind: "tls", side: "client" };

/**
 * The minimal failing sequences the properties found (on the code before the issue-10
 * fixes, and three still failing after them), each named by the rule it breaks. Every
 * one must now run without a violation.
 */
const COUNTEREXAMPLES: Array<{
  name: string;
  cfg: ModelConfig;
  actions: Action[];
  setup?: Partial<Setup>;
}> = [
  {
    name: "an already-aborted signal rejects a read queued behind another at once",
    cfg: TCP_S,
    actions: [
      { a: "read", max: 1 },
      { a: "read", max: 1, o: { signal: "pre" } },
    ],
  },
  {
    name: "an already-aborted signal wins over a past deadline",
    cfg: TCP_S,
    actions: [
      { a: "deadline", dir: "r", at: -1000 },
      { a: "readUntil", delim: ";", o: { signal: "pre" } },
    ],
  },
  {
    name: "a read's timeout runs while it waits its turn",
    cfg: TCP_S,
    actions: [
      { a: "readUntil", delim: ";" },
      { a: "readLine", o: { timeout: 0 } },
    ],
  },
  {
    name: "a write's timeout runs while it waits behind a write blocked on drain",
    cfg: TCP_S,
    actions: [
      { a: "pause" },
      { a: "bigWrite", size: 32 * 1024 * 1024 },
      { a: "write", data: "x", o: { timeout: 50 } },
      { a: "sleep", ms: 150 },
    ],
  },
  {
    name: "a write with an already-aborted signal rejects and sends nothing",
    cfg: TCP_S,
    actions: [{ a: "bigWrite", size: 256 * 1024, o: { signal: "pre" } }],
  },
  {
    name: "an empty write with an already-aborted signal rejects",
    cfg: TCP_C,
    actions: [{ a: "write", data: "", o: { signal: "pre" } }],
  },
  {
    name: "closeWrite honours a past write deadline",
    cfg: TCP_S,
    actions: [
      { a: "deadline", dir: "rw", at: -1000 },
      { a: "closeWrite", o: { timeout: 0 } },
    ],
  },
  {
    name: "closeWrite honours an already-aborted signal",
    cfg: TCP_S,
    actions: [{ a: "closeWrite", o: { signal: "pre" } }],
  },
  {
    name: "closeWrite(); close() while the peer sends: the peer still sees EOF",
    cfg: TCP_S,
    actions: [{ a: "closeWrite" }, { a: "send", data: "a" }, { a: "close" }],
  },
  {
    name: "readLine at EOF keeps a lone trailing CR",
    cfg: TCP_S,
    actions: [{ a: "send", data: "\r" }, { a: "readLine" }, { a: "destroy" }],
  },
  {
    name: "readLine at EOF returns a last line of exactly maxBytes",
    cfg: TCP_S,
    actions: [
      { a: "send", data: "abcde" },
      { a: "fin" },
      { a: "sleep", ms: 10 },
      { a: "readLine", maxBytes: 5, w: 30 },
    ],
  },
  {
    name: "a read needing more than is buffered rejects at once after a reset",
    cfg: TCP_S,
    actions: [{ a: "send", data: "a" }, { a: "rst" }, { a: "readExactly", n: 2 }],
  },
  {
    name: "EOF stays sticky after our writes hit the closed peer",
    cfg: TCP_S,
    actions: [
      { a: "send", data: "ab" },
      { a: "destroy" },
      { a: "readExactly", n: 2, w: 30 },
      { a: "read", max: 4, w: 30 },
      { a: "write", data: "x", w: 30 },
      { a: "sleep", ms: 20 },
      { a: "write", data: "y", w: 30 },
      { a: "sleep", ms: 20 },
      { a: "read", max: 4, w: 30 },
    ],
  },
  {
    name: "a per-call timeout during the lazy handshake fails that read only (DeadlineExceededError)",
    cfg: TLS_S,
    actions: [{ a: "readInto", size: 1, o: { timeout: 0 } }],
  },
  {
    name: "an aborted read during the lazy handshake does not fail the others",
    cfg: TLS_S,
    actions: [
      { a: "read", max: 1, o: { signal: "pre" } },
      { a: "readLine", o: { timeout: 0 } },
    ],
  },
  {
    name: "a failed lazy handshake with a read and a write pending: no unhandled rejection",
    cfg: TLS_S,
    actions: [{ a: "readLine" }, { a: "bigWrite", size: 256 * 1024 }, { a: "fin" }],
  },
  {
    name: 'a reset during the handshake is TLSError reason "ECONNRESET"',
    cfg: TLS_S,
    actions: [{ a: "rst" }, { a: "readExactly", n: 1, o: { timeout: 0 } }],
    setup: { lateStart: true },
  },
  {
    name: "closeWrite as the first op on a lazy server conn keeps the client's request",
    cfg: TLS_S,
    actions: [
      { a: "send", data: "REQUEST\n" },
      { a: "fin" },
      { a: "closeWrite" },
      { a: "readAll", w: 30 },
    ],
  },
  {
    name: "a read deadline does not fail a write during the lazy handshake",
    cfg: TLS_S,
    actions: [
      { a: "deadline", dir: "r", at: 0 },
      { a: "write", data: "a" },
    ],
  },
  {
    name: "a write deadline does not fail a read during the lazy handshake",
    cfg: TLS_S,
    actions: [
      { a: "deadline", dir: "w", at: 0 },
      { a: "read", max: 4 },
      { a: "sleep", ms: 20 },
      { a: "start" },
      { a: "send", data: "hi" },
      { a: "fin" },
    ],
    setup: { lateStart: true },
  },
  {
    name: "a read deadline set while the lazy handshake runs fails the read",
    cfg: TLS_S,
    actions: [
      { a: "read", max: 4 },
      { a: "deadline", dir: "r", at: 50 },
      { a: "sleep", ms: 200 },
    ],
    setup: { lateStart: true },
  },
  {
    name: "garbage after the handshake fails a TLS client's read at once",
    cfg: TLS_C,
    actions: [
      { a: "garbage", g: 0 },
      { a: "read", max: 4 },
    ],
  },
  // Still failing after the issue-10 fixes (main 0ea12c2):
  {
    name: "garbage after the handshake fails a lazy TLS server conn's read at once",
    cfg: TLS_S,
    actions: [
      { a: "write", data: "a", w: 30 },
      { a: "sleep", ms: 20 },
      { a: "garbage", g: 0 },
      { a: "read", max: 4 },
    ],
  },
  {
    name: "a reset is not reported as EOF when closeWrite() runs before it is seen (TLS)",
    cfg: TLS_C,
    actions: [{ a: "rst" }, { a: "closeWrite" }, { a: "readExactly", n: 1 }],
  },
  {
    name: "closeWrite() keeps TLS records that arrived with the previous ones",
    cfg: TLS_C,
    actions: [
      { a: "send", data: "\na", split: [1] },
      { a: "readLine", w: 30 },
      { a: "closeWrite" },
      { a: "read", max: 1, o: { timeout: 100 } },
    ],
    setup: { echoFin: true },
  },
];

describe("model-based: the shrunk counterexamples, as regression sequences", () => {
  for (const c of COUNTEREXAMPLES) {
    test(c.name, async () => {
      const { tr, violations } = await scenarioFull(c.cfg, c.actions, c.setup);
      assert.deepEqual(
        violations.map((v) => `[${v.rule}] ${v.detail}`),
        [],
        `${c.cfg.kind}-${c.cfg.side} ${JSON.stringify(c.actions)}\n--- trace ---\n${tr.log.join("\n")}`,
      );
    });
  }
});

// ------------------------------------------------------------------ the model's own checks

/** Run one hand-written sequence: its trace and violations. */
async function scenarioFull(cfg: ModelConfig, actions: Action[], setup?: Partial<Setup>) {
  const env = await createEnv(cfg);
  try {
    const tr = await runSequence(env, { lateStart: false, echoFin: false, ...setup }, actions);
    return { tr, violations: checkTrace(tr) };
  } finally {
    await env.close();
  }
}

/** Run one hand-written sequence: its trace and its violations' rule ids. */
async function scenario(cfg: ModelConfig, actions: Action[], setup?: Partial<Setup>) {
  const { tr, violations } = await scenarioFull(cfg, actions, setup);
  return { tr, rules: violations.map((v) => v.rule) };
}

function resultOf(tr: Trace, id: number): unknown {
  const op = tr.ops[id]!;
  return op.status === "ok" ? op.value : op.err;
}

describe("model-based: hand-written sequences (the model agrees with the documented behaviour)", () => {
  const tcpServer = TCP_S;
  const tlsServer = TLS_S;

  test("data, FIN, every read kind: the model accepts the documented results", async () => {
    const { tr, rules } = await scenario(tcpServer, [
      { a: "send", data: "ab;cd\r\nline2\nrest", split: [2, 9] },
      { a: "fin" },
      { a: "readUntil", delim: ";", w: 30 },
      { a: "readLine", w: 30 },
      { a: "readExactly", n: 3, w: 30 },
      { a: "read", max: 2, w: 30 },
      { a: "readAll", w: 30 },
      { a: "read", max: 4, w: 30 },
      { a: "read", max: 4, w: 30 },
    ]);
    assert.deepEqual(rules, []);
    assert.equal(String(resultOf(tr, 0)), "ab;");
    assert.equal(resultOf(tr, 1), "cd");
    assert.equal(String(resultOf(tr, 2)), "lin");
    assert.equal(String(resultOf(tr, 3)), "e2");
    assert.equal(String(resultOf(tr, 4)), "\nrest");
    assert.equal(resultOf(tr, 5), null);
    assert.equal(resultOf(tr, 6), null, "EOF is sticky");
  });

  test("writes reach the peer in order, then EOF after close()", async () => {
    const { tr, rules } = await scenario(tcpServer, [
      { a: "write", data: "one" },
      { a: "write", data: ["two", "three"] },
      { a: "bigWrite", size: 256 * 1024 },
      { a: "close" },
    ]);
    assert.deepEqual(rules, []);
    assert.ok(tr.peerEnd !== undefined, "the peer saw EOF");
    assert.equal(Buffer.concat(tr.peerRecv).subarray(0, 15).toString(), "<0>one<1>twothr");
  });

  test("a lazy TLS server conn: reads wait for a late client, then get its bytes", async () => {
    const { tr, rules } = await scenario(
      tlsServer,
      [
        { a: "read", max: 16 },
        { a: "send", data: "hello" },
        { a: "sleep", ms: 20 },
        { a: "start" },
        { a: "fin" },
      ],
      { lateStart: true },
    );
    assert.deepEqual(rules, []);
    assert.equal(String(resultOf(tr, 0)), "hello");
  });

  // The checker must catch what it claims to: synthetic traces with one known defect each.
  const base = (): Trace => ({
    cfg: tcpServer,
    setup: { lateStart: false, echoFin: false },
    actions: [],
    t0: 0,
    ops: [],
    sends: [{ t: 1, data: Buffer.from("abcdef"), valid: true }],
    closeCalls: [100],
    closeWriteCalls: [],
    deadlines: [],
    snaps: [],
    peerRecv: [],
    peerEnd: 101,
    unhandled: [],
    uncaught: [],
    log: [],
    teardownT: 90,
    cleanupT: 100,
  });
  const op = (id: number, o: Partial<OpRec> & Pick<OpRec, "kind" | "act">): OpRec => ({
    id,
    desc: o.kind,
    callT: 2,
    settleT: 3,
    status: "ok",
    sync: false,
    pre: false,
    ...o,
  });
  const rulesOf = (tr: Trace) => checkTrace(tr).map((v) => v.rule);

  test("checker: a read returning bytes the peer never sent is BYTES", () => {
    const tr = base();
    tr.ops = [op(0, { kind: "read", act: { a: "read", max: 4 }, value: Buffer.from("abdd") })];
    assert.deepEqual(rulesOf(tr), ["BYTES"]);
  });

  test("checker: EOF before every byte was returned is LOST-BYTES; EOF that un-sticks is caught", () => {
    const tr = base();
    tr.fin = 1.5;
    tr.ops = [
      op(0, { kind: "read", act: { a: "read", max: 4 }, value: Buffer.from("abcd") }),
      op(1, { kind: "read", act: { a: "read", max: 4 }, value: null, callT: 4, settleT: 5 }),
    ];
    assert.deepEqual(rulesOf(tr), ["LOST-BYTES"]);
  });

  test("checker: a read pending forever is HANG; one settling long after its timeout is LATE", () => {
    const tr = base();
    const pending = op(0, { kind: "read", act: { a: "read", max: 4 }, status: "pending" });
    delete pending.settleT;
    tr.ops = [
      pending,
      op(1, {
        kind: "readExactly",
        act: { a: "readExactly", n: 1 },
        timeout: 10,
        status: "err",
        err: new DeadlineExceededError("read"),
        settleT: 5000,
      }),
    ];
    const rules = rulesOf(tr);
    assert.ok(rules.includes("HANG"), rules.join());
    assert.ok(rules.includes("LATE-TIMEOUT"), rules.join());
  });

  test("checker: writes missing at the peer after a clean close are WRITE-LOST", () => {
    const tr = base();
    tr.ops = [
      op(0, { kind: "write", act: { a: "write", data: "x" }, data: Buffer.from("<0>x") }),
      op(1, { kind: "write", act: { a: "write", data: "y" }, data: Buffer.from("<1>y") }),
    ];
    tr.peerRecv = [Buffer.from("<0>x")];
    assert.deepEqual(rulesOf(tr), ["WRITE-LOST"]);
  });
});
