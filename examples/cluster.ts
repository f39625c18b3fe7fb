/**
 * One TLS listener per core with node:cluster, sharing session ticket keys so a
 * client resumes its session whichever worker it lands on.
 *
 * Run: npx tsx examples/cluster.ts [workers] [port]
 * It writes the CA to a file and prints the command to connect. A client that keeps its session
 * (one process dialing twice, or `openssl s_client -sess_out F` then `-sess_in F`) resumes it
 * whichever worker it lands on.
 */
import cluster from "node:cluster";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
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
  const caFile = join(mkdtempSync(join(tmpdir(), "tlsnet-cluster-")), "ca.pem");
  writeFileSync(caFile, ca.cert);
  console.log(`primary ${process.pid}: ${workers} workers on 127.0.0.1:${port}`);
  console.log(`CA: ${caFile}`);
  console.log(`try: npx tlsnet connect localhost:${port} --ca ${caFile}`);
  console.log("     (in a checkout of tlsnet: npm run -s tlsnet -- connect ..., the same)");
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
      await conn.copyTo(conn); // echo until the client half-closes, then half-close back
    },
  });
  process.on("SIGTERM", () => void ln.close({ graceful: 2000 }).then(() => process.exit(0)));
}
