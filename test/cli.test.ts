/**
 * The `tlsnet` command line, run as child processes (node --import tsx
 * src/cli/main.ts ...) against each other, openssl and curl, all on
 * 127.0.0.1 port 0, with TLSNET_HOME in a temporary directory. Every child is
 * killed when its test ends, failed or not.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer as createHTTPSServer } from "node:https";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createCA } from "../src/certs/index.ts";
import {
  certFiles,
  deadPort,
  HOME,
  literal,
  type Proc,
  run as runCli,
  serve,
  stop,
  WORK,
  which,
} from "./helpers/cli.ts";
import { poll } from "./helpers/util.ts";

/** Run `tlsnet ...args` with `input` on stdin. */
const run = (args: string[], input = "") => runCli(args, { input });

describe("serve (echo, dev CA) and connect", { timeout: 30_000 }, () => {
  let server: Proc & { port: number };
  const caFile = join(HOME, "ca.pem");
  before(async () => {
    server = await serve();
  });
  after(() => stop(server));

  test("serve prints the CA, the connect command that works here, and how to stop it", () => {
    const out = server.stdout();
    assert.match(out, new RegExp(`dev CA: ${literal(caFile)}`));
    // Run from a checkout, the command to paste is the npm script, not a bare `tlsnet`.
    const tryLine = `try:    npm run -s tlsnet -- connect 127.0.0.1:${server.port} --ca ${caFile}`;
    assert.ok(out.includes(tryLine), out);
    assert.ok(out.includes(`stop:   Ctrl-C, or kill ${server.child.pid}`), out);
  });

  test("round trip with verification on", { timeout: 15_000 }, async () => {
    const r = await run(
      ["connect", `127.0.0.1:${server.port}`, "--servername", "localhost", "--ca", caFile],
      "hello tlsnet\n",
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "hello tlsnet\n");
    assert.match(r.stderr, /verified\s+yes/);
    assert.match(r.stderr, /CN=localhost/);
    assert.match(r.stderr, /timings\s+dns .* tcp .* tls /);
    // The server logged the connection: remote, version, SNI, bytes.
    await server.waitFor(/127\.0\.0\.1:\d+ TLSv1\.[23] alpn=- sni=localhost .* in=13 out=13/);
  });

  test("connect --json gives a parseable summary, then the data", { timeout: 15_000 }, async () => {
    const r = await run(
      [
        "connect",
        `127.0.0.1:${server.port}`,
        "--servername",
        "localhost",
        "--ca",
        caFile,
        "--json",
      ],
      "ping\n",
    );
    assert.equal(r.code, 0, r.stderr);
    const [first, ...rest] = r.stdout.split("\n");
    const s = JSON.parse(first!);
    assert.match(s.version, /^TLSv1\.[23]$/);
    assert.equal(typeof s.cipherSuite, "string");
    assert.equal(s.verified, true);
    assert.equal(s.serverName, "localhost");
    assert.equal(s.resumed, false);
    assert.equal(s.alpnProtocol, null);
    assert.match(s.chain[0].subject, /CN=localhost/);
    assert.ok(s.chain[0].subjectAltNames.includes("IP Address:127.0.0.1"));
    for (const k of ["dns", "tcp", "tls"]) assert.equal(typeof s.timings[k], "number");
    assert.equal(rest.join("\n"), "ping\n");
  });

  test("without the CA, verification fails with the reason and exit 1", {
    timeout: 15_000,
  }, async () => {
    const r = await run(["connect", `127.0.0.1:${server.port}`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN/);
    assert.equal(r.stdout, "");
  });

  test("SIGTERM closes gracefully with exit 0", { timeout: 10_000 }, async () => {
    server.child.kill("SIGTERM");
    const { code } = await server.exited;
    assert.equal(code, 0, server.stderr());
    assert.match(server.stdout(), /stopped/);
  });
});

test("connect to an expired certificate prints CERT_HAS_EXPIRED and exits 1", {
  timeout: 20_000,
}, async () => {
  const pki = await certFiles(["localhost", "127.0.0.1"], {
    validFrom: new Date("2020-01-01T00:00:00Z"),
    validDays: 1,
  });
  const server = await serve(["--cert", pki.cert, "--key", pki.key]);
  try {
    assert.match(server.stdout(), /EXPIRED/);
    const r = await run(["connect", `127.0.0.1:${server.port}`, "--ca", pki.ca]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /CERT_HAS_EXPIRED/);
    assert.match(r.stderr, /expired/);
    assert.equal(r.stderr.trim().split("\n")[0]!.startsWith("tlsnet connect: "), true);
  } finally {
    stop(server);
  }
});

describe("serve --mode http", { timeout: 30_000 }, () => {
  let server: Proc & { port: number };
  const caFile = join(HOME, "ca.pem");
  before(async () => {
    server = await serve(["--mode", "http"]);
  });
  after(() => stop(server));

  test("fetch: 20 URLs, one on a dead port: 19 ok, 1 failed, exit 1", {
    timeout: 20_000,
  }, async () => {
    const dead = await deadPort();
    const urls = Array.from({ length: 19 }, (_, i) => `https://127.0.0.1:${server.port}/item/${i}`);
    urls.splice(7, 0, `https://127.0.0.1:${dead}/nothing`);
    const outDir = join(WORK, "bodies");
    const r = await run(["fetch", ...urls, "--ca", caFile, "--concurrency", "6", "--out", outDir]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^19 ok, 1 failed/m);
    assert.equal(r.stdout.split("\n").filter((l) => / 200 /.test(l)).length, 19);
    const errLine = r.stdout.split("\n").find((l) => l.includes(`:${dead}/`));
    assert.match(errLine ?? "", /error .*refused/);
    assert.match(r.stderr, /1 of 20 URL\(s\) failed/);
    const files = readdirSync(outDir);
    assert.equal(files.length, 19);
    const body = readFileSync(join(outDir, `127.0.0.1_${server.port}_item_3`), "utf8");
    assert.match(body, /path: \/item\/3/);
    assert.match(body, /tls: TLSv1\.[23]/);
  });

  test("fetch --json", { timeout: 15_000 }, async () => {
    const r = await run(["fetch", `https://127.0.0.1:${server.port}/j`, "--ca", caFile, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.ok, 1);
    assert.equal(j.results[0].status, 200);
    assert.equal(j.results[0].alpnProtocol, "http/1.1");
  });

  test("curl fetches with --cacert the dev CA", { timeout: 15_000 }, async (t) => {
    if (!which("curl")) {
      t.skip("curl is not installed (Debian package: curl)");
      return;
    }
    const r = spawnSync(
      "curl",
      ["-sS", "--max-time", "10", "--cacert", caFile, `https://127.0.0.1:${server.port}/hello?x=1`],
      { encoding: "utf8" },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /hello from tlsnet/);
    assert.match(r.stdout, /tls: TLSv1\.[23]/);
    assert.match(r.stdout, /path: \/hello\?x=1/);
  });
});

test("fetch decodes chunked bodies and bodies that end at EOF", { timeout: 20_000 }, async () => {
  const pki = await certFiles(["127.0.0.1"]);
  const chunks = ["first chunk\n", "x".repeat(70_000), "\nlast\n"];
  // node:https as a third-party peer: it sends chunked unless told a length.
  const server = createHTTPSServer(
    { cert: readFileSync(pki.cert), key: readFileSync(pki.key) },
    (req, res) => {
      if (req.url === "/chunked") {
        res.writeHead(200, { "Content-Type": "text/plain", Trailer: "X-Sum" });
        for (const c of chunks) res.write(c);
        res.addTrailers({ "X-Sum": "ok" });
        res.end();
      } else {
        // No length, no chunking: the body ends when the connection does.
        res.useChunkedEncodingByDefault = false;
        res.shouldKeepAlive = false;
        res.writeHead(404, { "Content-Type": "text/plain" });
        res.end("gone until EOF\n");
      }
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  try {
    const outDir = join(WORK, "chunked");
    const base = `https://127.0.0.1:${port}`;
    const r = await run([
      "fetch",
      `${base}/chunked`,
      `${base}/eof`,
      "--ca",
      pki.ca,
      "--out",
      outDir,
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const j = JSON.parse(r.stdout);
    assert.equal(j.results[0].status, 200);
    assert.equal(j.results[0].bytes, chunks.join("").length);
    assert.equal(readFileSync(join(outDir, `127.0.0.1_${port}_chunked`), "utf8"), chunks.join(""));
    assert.equal(j.results[1].status, 404);
    assert.equal(readFileSync(join(outDir, `127.0.0.1_${port}_eof`), "utf8"), "gone until EOF\n");
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

test("cert writes files that openssl verify accepts, reusing the CA", {
  timeout: 20_000,
}, async (t) => {
  if (!which("openssl")) {
    t.skip("openssl is not installed");
    return;
  }
  const dir = join(WORK, "certs");
  const a = await run(["cert", "localhost", "127.0.0.1", "::1", "--dir", dir]);
  assert.equal(a.code, 0, a.stderr);
  assert.match(a.stdout, /curl --cacert/);
  assert.match(a.stdout, /NODE_EXTRA_CA_CERTS=/);
  const ca = readFileSync(join(dir, "ca.pem"), "utf8");
  // A second name in the same directory is signed by the same CA (loaded from disk).
  const b = await run(["cert", "*.example.test", "--client", "--dir", dir, "--json"]);
  assert.equal(b.code, 0, b.stderr);
  const j = JSON.parse(b.stdout);
  assert.equal(j.caCreated, false);
  assert.equal(readFileSync(join(dir, "ca.pem"), "utf8"), ca);
  const v = spawnSync(
    "openssl",
    ["verify", "-CAfile", "ca.pem", "localhost.pem", "_wildcard.example.test.pem"],
    { cwd: dir, encoding: "utf8" },
  );
  assert.equal(v.status, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /localhost\.pem: OK/);
  assert.match(v.stdout, /_wildcard\.example\.test\.pem: OK/);
  const bad = await run(["cert", "not a name!", "--dir", dir]);
  assert.equal(bad.code, 2);
});

test("serve reloads certificates on SIGHUP", { timeout: 25_000 }, async () => {
  const dir = mkdtempSync(join(WORK, "hup-"));
  const ca = await createCA();
  const caFile = join(dir, "ca.pem");
  const certFile = join(dir, "cert.pem");
  const keyFile = join(dir, "key.pem");
  const put = async (name: string) => {
    const leaf = await ca.issue({ names: [name, "127.0.0.1"] });
    writeFileSync(certFile, leaf.chain);
    writeFileSync(keyFile, leaf.key);
  };
  writeFileSync(caFile, ca.cert);
  await put("alpha.test");
  const server = await serve(["--cert", certFile, "--key", keyFile]);
  try {
    const subject = async () => {
      const r = await run(["connect", `127.0.0.1:${server.port}`, "--ca", caFile, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout.split("\n")[0]!).chain[0].subject as string;
    };
    assert.match(await subject(), /CN=alpha\.test/);
    await put("beta.test");
    server.child.kill("SIGHUP");
    await server.waitFor(/reloaded certificates/);
    assert.match(await subject(), /CN=beta\.test/);
  } finally {
    stop(server);
  }
});

test("serve --watch reloads when the files change", { timeout: 25_000 }, async () => {
  const pki = await certFiles(["one.test", "127.0.0.1"]);
  const server = await serve(["--cert", pki.cert, "--key", pki.key, "--watch"]);
  try {
    await server.waitFor(/watching/);
    const leaf = await pki.ca_.issue({ names: ["two.test", "127.0.0.1"] });
    // Key first: the watcher may fire between the two writes and must then fail safe.
    writeFileSync(pki.key, leaf.key);
    writeFileSync(pki.cert, leaf.chain);
    let subject = "";
    await poll(
      async () => {
        const r = await run(["connect", `127.0.0.1:${server.port}`, "--ca", pki.ca, "--json"]);
        if (r.code === 0) subject = JSON.parse(r.stdout.split("\n")[0]!).chain[0].subject;
        return subject.includes("two.test");
      },
      8000,
      200,
    );
    assert.match(subject, /CN=two\.test/);
  } finally {
    stop(server);
  }
});

test("bad flags exit 2 with a usage line; --help exits 0 with an example", {
  timeout: 30_000,
}, async () => {
  const bad = await Promise.all([
    run(["connect", "--bogus", "127.0.0.1:1"]),
    run(["connect"]),
    run(["serve", "--mode", "ftp"]),
    run(["fetch", "http://example.com/"]),
    run(["cert"]),
    run(["fetch", "https://127.0.0.1:1/", "--concurrency", "zero"]),
    run(["no-such-command"]),
    run([]),
  ]);
  for (const r of bad) {
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^usage: tlsnet/m);
  }
  const helps = await Promise.all(
    ["serve", "connect", "fetch", "cert", "info"].map((c) => run([c, "--help"])),
  );
  for (const r of helps) {
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^tlsnet \w+/);
    assert.match(r.stdout, /Example/);
  }
  const top = await run(["--help"]);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /Commands:/);
});

test("info --json names the backend and versions", { timeout: 15_000 }, async () => {
  const r = await run(["info", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.backend, "openssl");
  assert.equal(j.openssl, process.versions.openssl);
  assert.equal(j.node, process.version);
  assert.equal(j.protocols.tlsnet.min, "TLSv1.2");
  assert.ok(j.defaultCiphers.length > 0);
});
