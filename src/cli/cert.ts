/**
 * `tlsnet cert`: a dev CA (made once per directory) and a certificate for the
 * names given, as PEM files for any server, plus how to trust the CA.
 * @module
 */
import { isIP } from "node:net";
import { type Command, cliName, day, out, paint, parseFlags, UsageError } from "./common.ts";
import { dataDir, ensureLeaf, fileBase, openCA } from "./devcerts.ts";

const usage = "tlsnet cert NAME... [--dir D] [--client] [--json]";

const help = `${usage}

Write a certificate for the names (DNS names, wildcards like *.example.test,
IP addresses) signed by a dev CA. The CA is created the first time in the
directory and reused afterwards, so you trust it once.

Files, in D (default ${dataDir()}, or $TLSNET_HOME):
  ca.pem, ca-key.pem        the dev CA (keep ca-key.pem private)
  NAME.pem, NAME-key.pem    the certificate and its key, NAME being the first name

Options:
  --dir D      where to write (created if missing)
  --client     also usable as a client certificate (mTLS)
  --json       print the file paths as JSON
  -h, --help   this help

Not for production: the CA key has no protection and no revocation.

Example:
  tlsnet cert localhost 127.0.0.1 ::1 --dir ./certs
  tlsnet serve --cert ./certs/localhost.pem --key ./certs/localhost-key.pem`;

export const command: Command = { usage, help, run };

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    dir: { type: "string" },
    client: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  });
  if (values.help) {
    out(help);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError("give at least one name, e.g. localhost");
  const dir = values.dir ?? dataDir();
  const fix =
    values.dir !== undefined
      ? "pass --dir a directory you can write to (it is created if missing)"
      : "set TLSNET_HOME, or pass --dir, to a directory you can write to";
  const stored = await openCA(dir, fix);
  let leaf: Awaited<ReturnType<typeof ensureLeaf>>;
  try {
    leaf = await ensureLeaf(dir, stored, fileBase(positionals[0]!), {
      names: positionals,
      client: values.client,
      fresh: true,
      fix,
    });
  } catch (e) {
    // A name that cannot go in a certificate is the caller's mistake.
    if (e instanceof RangeError || e instanceof TypeError) {
      throw new UsageError(e.message.replace(/^issue: opts\.names\[\d+\] /, "name "));
    }
    throw e;
  }

  if (values.json) {
    out(
      JSON.stringify({
        ca: stored.certFile,
        caKey: stored.keyFile,
        caCreated: stored.created,
        cert: leaf.certFile,
        key: leaf.keyFile,
        names: positionals,
        validTo: new Date(leaf.cert.validTo).toISOString(),
      }),
    );
    return 0;
  }
  const c = paint(process.stdout);
  const first = positionals[0]!;
  const host = isIP(first) === 6 ? `[${first}]` : first.replace(/^\*\./, "www.");
  out(
    `${c.bold("CA")}           ${stored.certFile} ${c.dim(stored.created ? "(new)" : "(existing)")}`,
  );
  out(`${c.bold("certificate")}  ${leaf.certFile}`);
  out(`${c.bold("key")}          ${leaf.keyFile}`);
  out(
    `${c.dim("names")}        ${positionals.join(", ")}${values.client ? " (server + client)" : ""}, until ${day(new Date(leaf.cert.validTo))}`,
  );
  out();
  const tlsnet = cliName();
  out("Trust the CA:");
  out(`  curl --cacert ${stored.certFile} https://${host}:8443/`);
  out(`  NODE_EXTRA_CA_CERTS=${stored.certFile} node app.js`);
  out(`  ${tlsnet} connect ${host}:8443 --ca ${stored.certFile}`);
  out("Serve with it:");
  out(`  ${tlsnet} serve --cert ${leaf.certFile} --key ${leaf.keyFile}`);
  if (values.client) {
    out("Present it as a client certificate (to a server whose --client-ca is this CA):");
    out(`  ${tlsnet} connect HOST:PORT --cert ${leaf.certFile} --key ${leaf.keyFile}`);
  }
  return 0;
}
