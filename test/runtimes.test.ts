/**
 * tlsnet under Bun and Deno: test/fixtures/runtime-smoke.ts (TCP echo, TLS echo with
 * verification, an unknown CA refused, SNI, ALPN, mTLS, deadlines, resumption, tlsnet/certs,
 * tls.backend()) runs under each runtime, and under this Node as a baseline. The runtimes are
 * the npm packages `bun` and `deno`, installed by the servers benchmark's code into its cache
 * (~/.cache/tlsnet-bench, or $TLSNET_BENCH_CACHE), never into this package; .ci/run installs
 * them before `npm test`. A runtime that cannot be installed is skipped with the reason.
 * What differs per runtime, and why, is in docs/runtimes.md.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { defaultCacheDir, ensureRuntimes, type Runtimes } from "../bench/servers.ts";
import { createCA } from "../src/certs/index.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SMOKE = join("test", "fixtures", "runtime-smoke.ts");
const WORK = mkdtempSync(join(tmpdir(), "tlsnet-runtimes-"));
const FIXTURE = join(WORK, "certs.json");
after(() => rmSync(WORK, { recursive: true, force: true }));

/** Every check the smoke script runs; all must pass on every runtime. */
const CHECKS = [
  "backend",
  "tcp-echo",
  "tls-echo-verified",
  "tls-unknown-ca-refused",
  "sni",
  "alpn",
  "mtls",
  "deadline",
  "resumption",
  "shared-ticket-keys",
  "certs",
];

interface Result {
  check: string;
  ok: boolean;
  detail: string;
}

before(async () => {
  const ca = await createCA();
  const other = await createCA();
  const pem = ({ cert, key }: { cert: string; key: string }) => ({ cert, key });
  const fixture = {
    ca: ca.cert,
    otherCa: other.cert,
    a: pem(await ca.issue({ names: ["a.test", "localhost", "127.0.0.1"] })),
    b: pem(await ca.issue({ names: ["b.test"] })),
    client: pem(await ca.issue({ names: ["client.test"], client: true })),
  };
  writeFileSync(FIXTURE, JSON.stringify(fixture));
});

const children = new Set<ChildProcess>();
after(() => {
  for (const c of children) c.kill("SIGKILL");
});

/** Runs the smoke script with `cmd args...`; resolves with its parsed lines and exit status. */
function runSmoke(
  cmd: string,
  args: string[],
): Promise<{ code: number | null; results: Result[]; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };
    // Bun and Deno run the node engine only: a suite run under TLSNET_ENGINE=native says nothing
    // about them (and would make every check a ConfigError, as it should), and the ASan run's
    // sanitizer preload (npm run test:asan) is for Node processes that load the addon.
    if (cmd !== process.execPath) {
      delete env.TLSNET_ENGINE;
      delete env.LD_PRELOAD;
    }
    const child = spawn(cmd, [...args, SMOKE, FIXTURE], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
      env,
    });
    children.add(child);
    let out = "";
    let err = "";
    child.stdout.on("data", (b: Buffer) => {
      out += b;
    });
    child.stderr.on("data", (b: Buffer) => {
      err += b;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      children.delete(child);
      const results = out
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Result);
      resolve({ code, results, stderr: err });
    });
  });
}

/** Asserts that every check ran and passed; returns the results by check name. */
function assertAllPassed(
  runtime: string,
  r: { code: number | null; results: Result[]; stderr: string },
): Map<string, Result> {
  const byName = new Map(r.results.map((x) => [x.check, x]));
  const failed = r.results.filter((x) => !x.ok).map((x) => `${x.check}: ${x.detail}`);
  assert.deepEqual(failed, [], `${runtime}: failed checks`);
  assert.deepEqual(
    [...byName.keys()],
    CHECKS,
    `${runtime}: the checks that ran (exit ${r.code})\n${r.stderr.slice(-2000)}`,
  );
  assert.equal(r.code, 0, `${runtime} exited ${r.code}\n${r.stderr.slice(-2000)}`);
  return byName;
}

function backendOf(results: Map<string, Result>): Record<string, string> {
  return JSON.parse(results.get("backend")!.detail) as Record<string, string>;
}

test("the smoke script passes under this Node (baseline)", { timeout: 120_000 }, async () => {
  const results = assertAllPassed("node", await runSmoke(process.execPath, ["--import", "tsx"]));
  assert.equal(results.get("resumption")!.detail, "resumed: false, true");
  assert.equal(results.get("shared-ticket-keys")!.detail, "resumed on a, a, b: false, true, true");
  const b = backendOf(results);
  assert.equal(b.name, "openssl");
  assert.equal(b.version, process.versions.openssl);
  assert.equal(b.runtime, "node");
});

describe("Bun and Deno from npm", { timeout: 900_000 }, () => {
  let rt: Runtimes = { notes: [] };
  before(
    () => {
      rt = ensureRuntimes(defaultCacheDir(), true, ["bun", "deno"], (line) =>
        process.stderr.write(`runtimes: ${line}\n`),
      );
    },
    { timeout: 700_000 },
  );

  const skipReason = (name: "bun" | "deno") =>
    `${name} could not be installed from npm into ${defaultCacheDir()}: ${rt.notes.join("; ") || "not found after install"}`;

  test("Bun: every check passes; backend is BoringSSL; sessions resume, ticketKeys ignored", async (t) => {
    if (!rt.bun) return t.skip(skipReason("bun"));
    const results = assertAllPassed("bun", await runSmoke(rt.bun, []));
    const b = backendOf(results);
    assert.equal(b.name, "boringssl");
    assert.equal(b.runtime, "bun");
    assert.match(b.version!, /^[0-9a-f]{40}$/, "Bun reports BoringSSL's commit");
    assert.equal(results.get("resumption")!.detail, "resumed: false, true");
    // Bun ignores ticketKeys: each listener has its own (docs/runtimes.md).
    assert.equal(
      results.get("shared-ticket-keys")!.detail,
      "resumed on a, a, b: false, true, false",
    );
  });

  test("Deno: every check passes; backend is rustls; its client never resumes (docs/runtimes.md)", async (t) => {
    if (!rt.deno) return t.skip(skipReason("deno"));
    const results = assertAllPassed("deno", await runSmoke(rt.deno, ["run", "-A"]));
    const b = backendOf(results);
    assert.equal(b.name, "rustls");
    assert.equal(b.version, "unknown");
    assert.equal(b.runtime, "deno");
    // If a Deno release starts resuming, update docs/runtimes.md and this expectation.
    assert.equal(results.get("resumption")!.detail, "resumed: false, false");
    assert.equal(
      results.get("shared-ticket-keys")!.detail,
      "resumed on a, a, b: false, false, false",
    );
  });
});
