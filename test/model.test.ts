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

// ------------------------------------------------------------------ the model's own checks

/** Run one hand-written sequence and return its violations (rule ids). */
async function scenario(cfg: ModelConfig, actions: Action[], setup?: Partial<Setup>) {
  const env = await createEnv(cfg);
  try {
    const tr = await runSequence(env, { lateStart: false, echoFin: false, ...setup }, actions);
    return { tr, rules: checkTrace(tr).map((v) => v.rule) };
  } finally {
    await env.close();
  }
}

function resultOf(tr: Trace, id: number): unknown {
  const op = tr.ops[id]!;
  return op.status === "ok" ? op.value : op.err;
}

describe("model-based: hand-written sequences (the model agrees with the documented behaviour)", () => {
  const tcpServer: ModelConfig = { kind: "tcp", side: "server" };
  const tlsServer: ModelConfig = { kind: "tls", side: "server" };

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
