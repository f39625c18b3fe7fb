/**
 * Handshakes per second against one TLS listener per worker (node:cluster, shared
 * ticket keys), with 1 and with 2 workers: the multi-core recipe of docs/multicore.md.
 *
 *   node --import tsx bench/cluster.ts [--seconds 3] [--rounds 3] [--concurrency 16]
 *
 * The load comes from a separate client process; on a 2-core machine it competes with
 * the workers for CPU, so the 2-worker gain is a floor, not what 2 idle cores would give.
 */
import { type ChildProcess, fork } from "node:child_process";
import cluster from "node:cluster";
import { randomBytes } from "node:crypto";
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import { createCA } from "../src/certs/index.ts";
import { tls } from "../src/index.ts";
import { median } from "./common.ts";

const role = process.env.TLSNET_CLUSTER_ROLE ?? "main";

if (cluster.isWorker) {
  // A worker: one TLS listener on the shared port.
  const ln = await tls.listen({
    addr: `127.0.0.1:${process.env.PORT}`,
    certs: [{ cert: process.env.CERT ?? "", key: process.env.KEY ?? "" }],
    ticketKeys: Buffer.from(process.env.TICKET_KEYS ?? "", "base64"),
    handler: async (conn) => {
      await conn.write("x");
      await conn.read(); // until the client's close_notify
    },
  });
  process.send?.("listening");
  process.on("disconnect", () => void ln.close().then(() => process.exit(0)));
} else if (role === "primary") {
  // The cluster primary: forks the workers and reports when all listen.
  const n = Number(process.env.WORKERS);
  let ready = 0;
  for (let i = 0; i < n; i++) {
    cluster.fork(process.env).on("message", () => {
      if (++ready === n) process.send?.("ready");
    });
  }
  process.on("disconnect", () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.disconnect();
  });
} else if (role === "client") {
  // The load: full (or resumed) handshakes with `concurrency` in flight, for `seconds`.
  const { CA, PORT, SECONDS, CONCURRENCY, RESUME } = process.env;
  const cfg = tls.config({ ca: CA ?? "", sessionCache: RESUME === "1" });
  const end = performance.now() + Number(SECONDS) * 1000;
  let count = 0;
  let resumed = 0;
  await Promise.all(
    Array.from({ length: Number(CONCURRENCY) }, async () => {
      while (performance.now() < end) {
        const conn = await tls.connect(`localhost:${PORT}`, cfg, { timeout: 10_000 });
        await conn.read(); // the "x": TLS 1.3 tickets arrive with it
        if (conn.state().resumed) resumed++;
        await conn.close();
        count++;
      }
    }),
  );
  process.send?.({ perSecond: count / Number(SECONDS), resumed: resumed / count });
  process.disconnect?.();
} else {
  await main();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: "string", default: "3" },
      rounds: { type: "string", default: "3" },
      concurrency: { type: "string", default: "16" },
    },
  });
  const ca = await createCA();
  const leaf = await ca.issue({ names: ["localhost"] });
  const script = new URL(import.meta.url).pathname;
  const run = (env: Record<string, string>): ChildProcess =>
    fork(script, [], { execArgv: ["--import", "tsx"], env: { ...process.env, ...env } });
  const once = (child: ChildProcess) =>
    new Promise<unknown>((resolve, reject) => {
      child.once("message", resolve);
      child.once("exit", (code) => reject(new Error(`child exited with ${code}`)));
    });

  console.log(
    `handshakes/s, cluster of tlsnet listeners; ${availableParallelism()} cores, ` +
      `${values.concurrency} in flight, ${values.rounds} × ${values.seconds} s, median`,
  );
  console.log("workers  full hs/s  resumed hs/s");
  for (const workers of [1, 2]) {
    // Below Linux's ephemeral range (32768+), where thousands of client sockets of the previous
    // round may still be closing: a random port there sometimes collided (EADDRINUSE).
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const primary = run({
      TLSNET_CLUSTER_ROLE: "primary",
      WORKERS: String(workers),
      PORT: String(port),
      CERT: leaf.cert,
      KEY: leaf.key,
      TICKET_KEYS: randomBytes(48).toString("base64"),
    });
    try {
      await once(primary);
      const rates: Record<"0" | "1", number[]> = { "0": [], "1": [] };
      for (const resume of ["0", "1"] as const) {
        for (let r = 0; r < Number(values.rounds); r++) {
          const client = run({
            TLSNET_CLUSTER_ROLE: "client",
            CA: ca.cert,
            PORT: String(port),
            SECONDS: values.seconds,
            CONCURRENCY: values.concurrency,
            RESUME: resume,
          });
          const result = (await once(client)) as { perSecond: number; resumed: number };
          rates[resume].push(result.perSecond);
        }
      }
      console.log(
        `${String(workers).padStart(7)}  ${median(rates["0"]).toFixed(0).padStart(9)}  ${median(rates["1"]).toFixed(0).padStart(12)}`,
      );
    } finally {
      primary.kill("SIGTERM");
    }
  }
}
