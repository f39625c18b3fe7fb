/**
 * One TLS listener per core with node:cluster, sharing session ticket keys so a
 * client resumes its session whichever worker it lands on.
 *
 * Run: npx tsx examples/cluster.ts [workers] [port]
 * Try:  npx tlsnet connect localhost:8443 --ca <printed CA path>   (twice: the second resumes)
 */
import cluster from "node:cluster";
import { randomBytes } from "node:crypto";
import { availableParallelism } from "node:os";
import { tls } from "tlsnet";
import { createCA } from "tlsnet/certs";

const workers = Number(process.argv[2] ?? availableParallelism());
const port = Number(process.argv[3] ?? 8443);

if (cluster.isPrimary) {
  // The primary makes the secrets once; every worker gets the same ones.
  const ca = await createCA();
  const leaf = await ca.issue({ names: ["localhost", "127.0.0.1"] });
  const env = {
    TLSNET_CERT: leaf.cert,
    TLSNET_KEY: leaf.key,
    TLSNET_TICKET_KEYS: randomBytes(48).toString("base64"),
  };
  for (let i = 0; i < workers; i++) cluster.fork(env);
  console.log(`primary ${process.pid}: ${workers} workers on 127.0.0.1:${port}`);
  console.log(`CA (trust this to connect):\n${ca.cert}`);
  cluster.on("exit", (w, code) => console.log(`worker ${w.process.pid} exited (${code})`));
  process.on("SIGINT", () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.kill("SIGTERM");
  });
} else {
  // Workers' listen() calls are shared by the primary (round-robin on Linux);
  // with Node >= 22.12, `reusePort: true` lets the kernel balance instead.
  const ln = await tls.listen({
    addr: `127.0.0.1:${port}`,
    certs: [{ cert: process.env.TLSNET_CERT ?? "", key: process.env.TLSNET_KEY ?? "" }],
    ticketKeys: Buffer.from(process.env.TLSNET_TICKET_KEYS ?? "", "base64"),
    handler: async (conn) => {
      await conn.write(`served by worker ${process.pid}, resumed=${conn.state().resumed}\n`);
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  process.on("SIGTERM", () => void ln.close({ graceful: 2000 }).then(() => process.exit(0)));
}
