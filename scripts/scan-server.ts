/**
 * A tlsnet TLS echo server with default settings, for scripts/scan.sh: only
 * the certificate (a fresh dev CA + leaf for localhost/127.0.0.1) is given.
 *
 *   node --import tsx scripts/scan-server.ts --addr 127.0.0.1:18443 [--key-type ec-p256|rsa-2048|ed25519] [--ca-out FILE]
 *
 * Prints "listening on HOST:PORT" once ready; stops on SIGINT/SIGTERM.
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { createCA } from "../src/certs/index.ts";
import { type TLSConn, tls } from "../src/index.ts";

const { values } = parseArgs({
  options: {
    addr: { type: "string", default: "127.0.0.1:18443" },
    "key-type": { type: "string", default: "ec-p256" },
    "ca-out": { type: "string" },
  },
});
const keyType = values["key-type"];
if (keyType !== "ec-p256" && keyType !== "rsa-2048" && keyType !== "ed25519") {
  console.error(`--key-type must be ec-p256, rsa-2048 or ed25519, got ${keyType}`);
  process.exit(2);
}
const ca = await createCA({ keyType });
const leaf = await ca.issue({ names: ["localhost", "127.0.0.1"], keyType });
if (values["ca-out"]) writeFileSync(values["ca-out"], ca.cert);
let failures = 0;
const ln = await tls.listen({
  addr: values.addr,
  certs: [leaf],
  onError: () => {
    failures++;
  },
  handler: async (conn: TLSConn) => {
    for await (const chunk of conn) await conn.write(chunk);
    await conn.closeWrite();
  },
});
console.log(`listening on ${ln.addr} (${keyType} certificate, tlsnet defaults)`);
const stop = () => {
  const s = ln.stats();
  console.log(`stopping: ${JSON.stringify({ ...s, onError: failures })}`);
  void ln.close().then(() => process.exit(0));
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
