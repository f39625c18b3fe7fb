/**
 * Soak test (not part of `npm test`): N concurrent TLS connections (default
 * 10,000) held for S seconds (default 60), each echoing a small message every
 * ~5 s, client and server in separate processes (the server is forked).
 *
 *   npm run soak -- --conns 10000 --seconds 60
 *   bash -c 'ulimit -n 65536 && npm run soak'
 *
 * Prints every 5 s: conns held, errors, echoes, server RSS, client RSS. Exits
 * non-zero on any error, lost or corrupted byte, or a connection not held.
 *
 * `--cycles K` repeats dial, hold and close K times against the same server
 * and records its RSS after each close (after a forced GC): with K >= 3 the
 * soak fails when the last cycle's RSS after close is more than 10 % above the
 * first's, i.e. when closed conns leave memory behind (the first cycle sets
 * the allocator's high-water mark; later cycles should reuse it).
 *
 * `--role server` runs the server half (used by the soak itself and by
 * test/load.test.ts): it waits for {cert, key} over IPC, listens on
 * 127.0.0.1:0, echoes, and answers {type:"stats"} with its RSS and counters.
 */
import { fork, spawnSync } from "node:child_process";
import { setMaxListeners } from "node:events";
import { readFileSync } from "node:fs";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { createCA } from "../src/certs/index.ts";
import { type TLSConn, type TLSListener, tls } from "../src/index.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** What the server half reports. */
export interface ServerStats {
  type: "stats";
  id: number;
  rss: number;
  heapUsed: number;
  /** Conns inside the handler: handshaken and held. */
  handlers: number;
  errors: number;
  firstErrors: string[];
  accepted: number;
  active: number;
  rejected: number;
  handshakeFailures: number;
}

type ServerMessage = { type: "ready"; port: number } | ServerStats | { type: "stopped" };
type ControlMessage =
  | { type: "certs"; cert: string; key: string }
  | { type: "stats"; id: number; gc?: boolean }
  | { type: "stop" };

// ------------------------------------------------------------------ server half

async function serverMain(): Promise<void> {
  const certs = await new Promise<{ cert: string; key: string }>((resolve) => {
    const onMessage = (m: ControlMessage) => {
      if (m.type === "certs") {
        process.off("message", onMessage);
        resolve({ cert: m.cert, key: m.key });
      }
    };
    process.on("message", onMessage);
  });
  let handlers = 0;
  let errors = 0;
  const firstErrors: string[] = [];
  const ln: TLSListener = await tls.listen({
    addr: "127.0.0.1:0",
    backlog: 4096,
    certs: [certs],
    handshakeTimeout: 60_000,
    onError: (err) => {
      errors++;
      if (firstErrors.length < 5) firstErrors.push(`${err.name}: ${err.message}`);
    },
    handler: async (conn: TLSConn) => {
      handlers++;
      try {
        for await (const chunk of conn) await conn.write(chunk);
        await conn.closeWrite();
      } finally {
        handlers--;
      }
    },
  });
  const send = (m: ServerMessage) => process.send?.(m);
  process.on("message", (m: ControlMessage) => {
    if (m.type === "stats") {
      const gc = (globalThis as { gc?: () => void }).gc;
      if (m.gc && gc) {
        gc();
        gc();
      }
      const mem = process.memoryUsage();
      send({
        type: "stats",
        id: m.id,
        rss: mem.rss,
        heapUsed: mem.heapUsed,
        handlers,
        errors,
        firstErrors,
        ...ln.stats(),
      });
    } else if (m.type === "stop") {
      void ln.close({ graceful: 2000 }).then(() => {
        send({ type: "stopped" });
        process.disconnect?.();
      });
    }
  });
  process.on("disconnect", () => {
    void ln.close().then(() => process.exit(0));
  });
  send({ type: "ready", port: ln.addr.port });
}

/** A forked server half, for the soak and for tests. */
export interface ServerProcess {
  port: number;
  pid: number;
  stats(opts?: { gc?: boolean }): Promise<ServerStats>;
  stop(): Promise<void>;
}

/** Fork the server half with these certificates; resolves once it listens. */
export async function forkServer(certs: { cert: string; key: string }): Promise<ServerProcess> {
  const child = fork(fileURLToPath(import.meta.url), ["--role", "server"], {
    execArgv: ["--import", "tsx", "--expose-gc"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  let nextId = 1;
  const waiting = new Map<number, (s: ServerStats) => void>();
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`soak server exited early (code ${code})`)));
    child.on("message", (m: ServerMessage) => {
      if (m.type === "ready") resolve(m.port);
      else if (m.type === "stats") {
        waiting.get(m.id)?.(m);
        waiting.delete(m.id);
      }
    });
    child.send({ type: "certs", cert: certs.cert, key: certs.key } satisfies ControlMessage);
  });
  return {
    port,
    pid: child.pid ?? 0,
    stats: (opts) =>
      new Promise<ServerStats>((resolve, reject) => {
        const id = nextId++;
        const timer = setTimeout(() => {
          waiting.delete(id);
          reject(new Error("soak server did not answer stats within 10 s"));
        }, 10_000);
        waiting.set(id, (s) => {
          clearTimeout(timer);
          resolve(s);
        });
        child.send({ type: "stats", id, gc: opts?.gc ?? false } satisfies ControlMessage);
      }),
    stop: async () => {
      if (child.connected) child.send({ type: "stop" } satisfies ControlMessage);
      const timer = setTimeout(() => child.kill(), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The soft limit on open files of this process (what `ulimit -n` says in a child shell). */
export function fdLimit(): number {
  const r = spawnSync("sh", ["-c", "ulimit -n"], { encoding: "utf8" });
  const n = Number.parseInt(r.stdout.trim(), 10);
  return Number.isFinite(n) ? n : r.stdout.trim() === "unlimited" ? Number.MAX_SAFE_INTEGER : 1024;
}

/** Run `fn(i)` for i in 0..n-1 with at most `concurrency` at a time. */
export async function pool(
  n: number,
  concurrency: number,
  fn: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

// ------------------------------------------------------------------ client half (the soak)

/** A full GC in this process (for RSS figures that are not just garbage awaiting collection). */
function collectGarbage(): void {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  gc();
  gc();
}

function mb(bytes: number): string {
  return `${(bytes / MiB).toFixed(0)} MiB`;
}

async function soakMain(values: {
  conns: string;
  seconds: string;
  interval: string;
  cycles: string;
}): Promise<number> {
  let target = Number(values.conns);
  const seconds = Number(values.seconds);
  const interval = Number(values.interval) * 1000;
  const cycles = Number(values.cycles);
  if (!(target > 0) || !(seconds > 0) || !(interval > 0) || !(cycles >= 1 && cycles <= 20)) {
    console.error("usage: soak.ts [--conns N] [--seconds S] [--interval S] [--cycles 1..20]");
    return 2;
  }
  const limit = fdLimit();
  const need = target + 256;
  console.log(
    `soak: ${target} TLS conns for ${seconds} s${cycles > 1 ? `, ${cycles} cycles` : ""}, echo every ~${interval / 1000} s; ` +
      `Node ${process.version}, OpenSSL ${process.versions.openssl}, engine ${tls.backend().engine}; ulimit -n ${limit}`,
  );
  if (limit < need) {
    const capped = Math.max(1, limit - 256);
    console.log(
      `ulimit -n is ${limit}: too low for ${target} conns (each process needs ~${need} fds).\n` +
        "  Raise it in the shell first: `ulimit -n 65536 && npm run soak` (root can raise the hard\n" +
        "  limit too; otherwise ask for it in /etc/security/limits.conf).\n" +
        `  Capping this run at ${capped} conns.`,
    );
    target = capped;
  }
  try {
    const range = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
      .trim()
      .split(/\s+/);
    const ports = Number(range[1]) - Number(range[0]) + 1;
    if (ports < target + 1000) {
      console.log(
        `warning: only ${ports} ephemeral ports (ip_local_port_range ${range.join("-")})`,
      );
    }
  } catch {
    // not Linux
  }

  const ca = await createCA();
  const leaf = await ca.issue({ names: ["localhost", "127.0.0.1"] });
  const server = await forkServer(leaf);
  const serverBase = (await server.stats({ gc: true })).rss;
  collectGarbage();
  const clientBase = process.memoryUsage().rss;
  const t0 = performance.now();
  const elapsed = () => ((performance.now() - t0) / 1000).toFixed(0).padStart(4);

  const counters = {
    dialErrors: 0,
    echoErrors: 0,
    mismatches: 0,
    sentBytes: 0,
    echoedBytes: 0,
    echoes: 0,
  };
  const firstErrors: string[] = [];
  let peakServerRss = 0;
  const note = (what: string, err: unknown) => {
    if (firstErrors.length < 10)
      firstErrors.push(
        `${what}: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`,
      );
  };
  const rssAfterClose: number[] = [];
  let minHeld = Number.POSITIVE_INFINITY;
  let peakClientRss = 0;
  let held: ServerStats | undefined;
  let clientHeld = process.memoryUsage();
  let before: ServerStats | undefined;
  let after: ServerStats | undefined;
  let rampSeconds = 0;
  let dialed = 0;
  for (let cycle = 1; cycle <= cycles; cycle++) {
    const cycleStart = performance.now();
    const conns: TLSConn[] = [];
    let running = true;
    const stop = new AbortController();
    setMaxListeners(0, stop.signal); // one listener per conn's pause
    // A timer per pause, cancelled on stop (racing one shared promise would pile up reactions).
    const pause = (ms: number) => delay(ms, undefined, { signal: stop.signal }).catch(() => {});

    const echoLoop = async (conn: TLSConn, id: number) => {
      await pause(Math.random() * interval);
      let seq = 0;
      while (running) {
        const msg = Buffer.from(`${id}:${seq++}:`.padEnd(48, "."));
        try {
          await conn.write(msg);
          counters.sentBytes += msg.length;
          const back = await conn.readExactly(msg.length, { timeout: 30_000 });
          if (back.equals(msg)) counters.echoedBytes += back.length;
          else counters.mismatches++;
          counters.echoes++;
        } catch (err) {
          counters.echoErrors++;
          note(`echo on conn ${id}`, err);
          return;
        }
        await pause(interval * (0.8 + Math.random() * 0.4));
      }
    };

    const report = async (phase: string) => {
      const s = await server.stats();
      peakServerRss = Math.max(peakServerRss, s.rss);
      const open = conns.filter((c) => c.isOpen).length;
      const errs = counters.dialErrors + counters.echoErrors + counters.mismatches + s.errors;
      console.log(
        `[${elapsed()} s] ${phase.padEnd(5)} conns held: client ${open}, server ${s.handlers} | ` +
          `errors ${errs} | echoes ${counters.echoes} | in flight ${counters.sentBytes - counters.echoedBytes} B | ` +
          `server RSS ${mb(s.rss)} | client RSS ${mb(process.memoryUsage().rss)} (heap ${mb(process.memoryUsage().heapUsed)})`,
      );
      return s;
    };
    const ticker = setInterval(() => void report(running ? "hold" : "drain").catch(() => {}), 5000);

    // Ramp up: at most 256 handshakes in flight.
    const loops: Array<Promise<void>> = [];
    await pool(target, 256, async (i) => {
      try {
        const conn = await tls.connect(`127.0.0.1:${server.port}`, {
          ca: ca.cert,
          timeout: 60_000,
        });
        conns.push(conn);
        loops.push(echoLoop(conn, i));
      } catch (err) {
        counters.dialErrors++;
        note(`dial ${i}`, err);
      }
    });
    dialed = conns.length;
    rampSeconds = (performance.now() - cycleStart) / 1000;
    console.log(`ramp-up: ${conns.length} conns handshaken in ${rampSeconds.toFixed(1)} s`);
    const holdStart = performance.now();
    while (performance.now() - holdStart < seconds * 1000) {
      await new Promise((r) => setTimeout(r, 1000));
      minHeld = Math.min(minHeld, conns.filter((c) => c.isOpen).length);
      peakClientRss = Math.max(peakClientRss, process.memoryUsage().rss);
    }
    held = await server.stats({ gc: true });
    collectGarbage();
    clientHeld = process.memoryUsage();
    peakServerRss = Math.max(peakServerRss, held.rss);
    running = false;
    stop.abort();
    await Promise.all(loops);
    clearInterval(ticker);
    before = await report("end");
    await Promise.all(conns.map((c) => c.close()));
    after = await server.stats();
    for (let i = 0; i < 50 && (after.handlers > 0 || after.active > 0); i++) {
      await new Promise((r) => setTimeout(r, 200));
      after = await server.stats();
    }
    const settled = await server.stats({ gc: true });
    rssAfterClose.push(settled.rss);
    if (cycles > 1)
      console.log(`cycle ${cycle}: server RSS after closing every conn ${mb(settled.rss)}`);
  }
  await server.stop();
  if (!held || !before || !after) throw new Error("soak: no cycle ran");
  // Memory left behind by closed conns: the last cycle's RSS after close against the first's.
  const growth = rssAfterClose.length >= 3 ? rssAfterClose.at(-1)! / rssAfterClose[0]! - 1 : 0;
  const leaks = growth > 0.1;

  const lost = counters.sentBytes - counters.echoedBytes;
  const errors =
    counters.dialErrors +
    counters.echoErrors +
    counters.mismatches +
    after.errors +
    after.handshakeFailures;
  const summary = {
    target,
    seconds,
    rampSeconds: Number(rampSeconds.toFixed(1)),
    minHeld,
    serverHeldAtEnd: before.handlers,
    echoes: counters.echoes,
    sentBytes: counters.sentBytes,
    echoedBytes: counters.echoedBytes,
    lostBytes: lost,
    mismatches: counters.mismatches,
    dialErrors: counters.dialErrors,
    echoErrors: counters.echoErrors,
    serverErrors: after.errors,
    serverHandshakeFailures: after.handshakeFailures,
    serverActiveAfterClose: after.active,
    serverRssHeldMiB: Number((held.rss / MiB).toFixed(1)),
    serverRssPeakMiB: Number((peakServerRss / MiB).toFixed(1)),
    serverRssBaseMiB: Number((serverBase / MiB).toFixed(1)),
    serverRssPerConnKiB: Number(
      ((held.rss - serverBase) / Math.max(1, held.handlers) / KiB).toFixed(1),
    ),
    clientRssBaseMiB: Number((clientBase / MiB).toFixed(1)),
    clientRssPeakMiB: Number((peakClientRss / MiB).toFixed(1)),
    clientRssHeldAfterGcMiB: Number((clientHeld.rss / MiB).toFixed(1)),
    clientHeapHeldAfterGcMiB: Number((clientHeld.heapUsed / MiB).toFixed(1)),
    clientRssPerConnKiB: Number(
      ((clientHeld.rss - clientBase) / Math.max(1, dialed) / KiB).toFixed(1),
    ),
    cycles,
    serverRssAfterCloseMiB: rssAfterClose.map((r) => Number((r / MiB).toFixed(1))),
    serverRssGrowthAfterClosePct: Number((growth * 100).toFixed(1)),
    firstErrors: [...firstErrors, ...after.firstErrors],
  };
  console.log(`summary ${JSON.stringify(summary, null, 2)}`);
  const ok = errors === 0 && lost === 0 && minHeld >= target && after.active === 0 && !leaks;
  if (leaks) {
    console.log(
      `server RSS after close grew ${(growth * 100).toFixed(1)} % from cycle 1 to cycle ${cycles} (limit 10 %)`,
    );
  }
  console.log(ok ? "SOAK OK" : "SOAK FAILED");
  return ok ? 0 : 1;
}

// ------------------------------------------------------------------ entry

const isMain = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
if (isMain) {
  const { values } = parseArgs({
    options: {
      role: { type: "string", default: "client" },
      conns: { type: "string", default: "10000" },
      seconds: { type: "string", default: "60" },
      interval: { type: "string", default: "5" },
      cycles: { type: "string", default: "1" },
    },
  });
  if (values.role === "server") {
    await serverMain();
  } else {
    process.exitCode = await soakMain(values);
  }
}
