/**
 * `tlsnet info`: what TLS this machine gives tlsnet: the backend and its
 * version, Node's version, the protocol ranges, the default cipher list.
 * @module
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { getCiphers, rootCertificates } from "node:tls";
import { tls } from "../index.ts";
import { type Command, dataDir, out, paint, parseFlags, UsageError, version } from "./common.ts";

const usage = "tlsnet info [--json]";

const help = `${usage}

Show the TLS backend (OpenSSL through node:tls) and its version, Node's
version, the protocol range tlsnet and Node default to, tlsnet's default cipher
list, and where the CLI keeps its dev CA.

Options:
  --json       one JSON object instead of text
  -h, --help   this help

Example:
  tlsnet info --json`;

export const command: Command = { usage, help, run };

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { json: { type: "boolean", default: false } });
  if (values.help) {
    out(help);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const backend = tls.backend();
  const d = tls.defaults();
  const ciphers = d.ciphers.split(":").filter(Boolean);
  const nodeCiphers = d.nodeCiphers.split(":").filter(Boolean);
  const home = dataDir();
  const info = {
    tlsnet: version(),
    backend: backend.name,
    engine: backend.engine,
    engineReason: backend.engineReason,
    openssl: backend.version,
    runtime: backend.runtime,
    runtimeVersion: backend.runtimeVersion,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    protocols: {
      tlsnet: { min: d.minVersion, max: d.maxVersion },
      node: { min: d.nodeMin, max: d.nodeMax },
    },
    defaultCiphers: ciphers,
    nodeDefaultCiphers: nodeCiphers,
    knownCiphers: getCiphers().length,
    bundledRoots: rootCertificates.length,
    dataDir: home,
    devCA: existsSync(join(home, "ca.pem")) ? join(home, "ca.pem") : null,
  };
  if (values.json) {
    out(JSON.stringify(info, null, 2));
    return 0;
  }
  const c = paint(process.stdout);
  const row = (k: string, v: string) => out(`${c.dim(k.padEnd(11))} ${v}`);
  row("tlsnet", info.tlsnet);
  const engine = info.engine === "native" ? "native, tlsnet's addon" : "node, node:tls";
  row("backend", `${info.backend} ${info.openssl} (engine: ${engine})`);
  row("engine", info.engineReason);
  if (info.runtime === "node") row("node", `${info.node} (${info.platform})`);
  else row("runtime", `${info.runtime} ${info.runtimeVersion} (${info.platform})`);
  row(
    "protocols",
    `tlsnet ${d.minVersion}–${d.maxVersion} · node default ${d.nodeMin}–${d.nodeMax}`,
  );
  row(
    "ciphers",
    `tlsnet's default: TLS 1.3 suites, then ECDHE + AEAD only for TLS 1.2, in the server's ` +
      `order (Node's own default has ${nodeCiphers.length} entries; OpenSSL knows ${info.knownCiphers})`,
  );
  for (const line of wrap(ciphers, 76)) out(`${" ".repeat(12)}${c.dim(line)}`);
  row("roots", `${info.bundledRoots} bundled CA certificates (used unless --ca is given)`);
  row(
    "data dir",
    `${home}${info.devCA ? "" : c.dim(" (no dev CA yet: tlsnet serve or tlsnet cert makes one)")}`,
  );
  return 0;
}

/** Join list items with ":" into lines of at most `width` characters. */
function wrap(items: string[], width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const item of items) {
    const next = line === "" ? item : `${line}:${item}`;
    if (next.length > width && line !== "") {
      lines.push(`${line}:`);
      line = item;
    } else {
      line = next;
    }
  }
  if (line) lines.push(line);
  return lines;
}
