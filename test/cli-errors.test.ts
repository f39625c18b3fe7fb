/**
 * The CLI's failures speak CLI: each library error is worded with the flag that fixes it, usage
 * mistakes exit 2, and no raw Node error reaches the user. Every case runs `tlsnet` as a child
 * process and checks its real output and exit status (issue 14, items 6 to 12).
 */
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createCA } from "../src/certs/index.ts";
import { deadPort, literal, type Proc, run, serve, start, stop, WORK } from "./helpers/cli.ts";

/** A TCP server that accepts and never says anything: a TLS handshake against it times out. */
async function silentServer(t: { after: (fn: () => unknown) => void }): Promise<number> {
  const held = new Set<import("node:net").Socket>();
  const srv: Server = createServer((s) => {
    held.add(s);
    s.on("error", () => {});
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  t.after(async () => {
    for (const s of held) s.destroy();
    await new Promise((r) => srv.close(r));
  });
  return (srv.address() as { port: number }).port;
}

describe("messages name CLI flags, from the error's fields", { timeout: 60_000 }, () => {
  let server: Proc & { port: number };
  let home: string;
  before(async () => {
    home = mkdtempSync(join(WORK, "home-flags-"));
    server = await serve(["--mode", "http"], { env: { TLSNET_HOME: home } });
  });
  after(() => stop(server));

  test("fetch without --ca says --ca FILE, not ca/caFile", async () => {
    const r = await run(["fetch", `https://localhost:${server.port}/x`]);
    assert.equal(r.code, 1, r.stderr);
    const line = r.stdout.split("\n").find((l) => l.includes("/x "))!;
    assert.match(line, /signed by an unknown authority|self-signed root/);
    assert.match(line, /pass the CA that issued it with --ca FILE/);
    assert.doesNotMatch(r.stdout + r.stderr, /ca\/caFile|caFile/);
  });

  test("a fetch timeout says --timeout N ms, whole milliseconds", async (t) => {
    const port = await silentServer(t);
    const r = await run(["fetch", `https://127.0.0.1:${port}/slow`, "--timeout", "700"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /within --timeout 700 ms.*raise --timeout/);
    assert.doesNotMatch(r.stdout, /timeout\/deadline|\d\.\d{3,} ms/);
  });

  test("connect: --ca and --cert file problems name the flag and the file", async () => {
    const garbage = join(mkdtempSync(join(WORK, "bad-")), "cert.pem");
    writeFileSync(garbage, "not a certificate\n");
    const [noCa, badCert] = await Promise.all([
      run(["connect", `127.0.0.1:${server.port}`, "--ca", join(WORK, "nope.pem")]),
      run(["connect", `127.0.0.1:${server.port}`, "--cert", garbage, "--key", garbage]),
    ]);
    assert.equal(noCa.code, 1);
    assert.match(noCa.stderr, new RegExp(`^tlsnet connect: --ca: cannot read ${literal(WORK)}`));
    assert.equal(badCert.code, 1);
    assert.match(badCert.stderr, new RegExp(`--cert ${literal(garbage)} is not PEM`));
    assert.doesNotMatch(noCa.stderr + badCert.stderr, /caFile|certFile|keyFile/);
  });

  test("serve: a busy --addr and a missing --cert file name the flag", async () => {
    const [busy, missing, busyProxy] = await Promise.all([
      run(["serve", "--addr", `127.0.0.1:${server.port}`]),
      run([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--cert",
        join(WORK, "no.pem"),
        "--key",
        join(WORK, "no-key.pem"),
      ]),
      run(["proxy", "--listen", `127.0.0.1:${server.port}`, "--to", "127.0.0.1:9"]),
    ]);
    assert.equal(busyProxy.code, 1, busyProxy.stdout);
    assert.match(busyProxy.stderr, /^hint: pick another address with --listen /m, "proxy's flag");
    assert.equal(busy.code, 1, busy.stdout);
    assert.match(busy.stderr, /address already in use/);
    assert.match(
      busy.stderr,
      /^hint: pick another address with --addr \(port 0 picks a free one\)$/m,
    );
    assert.equal(missing.code, 1, missing.stdout);
    assert.equal(
      missing.stderr.trim(),
      `tlsnet serve: --cert: cannot read ${join(WORK, "no.pem")}: no such file`,
    );
  });

  test("a name mismatch lists the names the certificate covers", async () => {
    const r = await run([
      "connect",
      `127.0.0.1:${server.port}`,
      "--servername",
      "wrong.test",
      "--ca",
      join(home, "ca.pem"),
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /does not cover the name 'wrong\.test' \(it covers DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1\)/,
    );
    assert.match(r.stderr, /--servername NAME/);
    assert.doesNotMatch(r.stderr, /set serverName/);
  });

  test("http:// to serve --mode http gets 400 and 'use https://'", async () => {
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port: server.port, path: "/hello?x=1", timeout: 10_000 },
        (r) => {
          let body = "";
          r.setEncoding("utf8");
          r.on("data", (d) => {
            body += d;
          });
          r.on("end", () => resolve({ status: r.statusCode ?? 0, body }));
        },
      );
      req.on("error", reject);
      req.end();
    });
    assert.equal(res.status, 400);
    assert.equal(
      res.body,
      `This is an HTTPS server: use https://127.0.0.1:${server.port}/hello?x=1\n`,
    );
    await server.waitFor(/plain HTTP on the TLS port: answered 400, use https:\/\//);
  });
});

test("connect: a handshake that never comes reports --timeout in whole ms", {
  timeout: 30_000,
}, async (t) => {
  const port = await silentServer(t);
  const r = await run(["connect", `127.0.0.1:${port}`, "--timeout", "700"]);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr.trim(),
    `tlsnet connect: no TLS handshake from 127.0.0.1:${port} within --timeout 700 ms; is it a TLS port? (raise --timeout for a slow server)`,
  );
});

test("a dead address is named once, with the address it resolved to", {
  timeout: 30_000,
}, async () => {
  const port = await deadPort();
  const [f, c] = await Promise.all([
    run(["fetch", `https://localhost:${port}/dead`, "--insecure"]),
    run(["connect", `localhost:${port}`, "--insecure"]),
  ]);
  assert.equal(f.code, 1);
  const line = f.stdout.split("\n").find((l) => l.includes("/dead"))!;
  assert.match(line, new RegExp(`could not connect to localhost:${port}\\b`));
  assert.equal(line.split(`:${port}`).length - 1, 2, line); // in the URL and once in the error
  assert.match(line, /connection refused/);
  assert.equal(c.code, 1);
  assert.match(
    c.stderr,
    /^tlsnet connect: could not connect to localhost:\d+( \(127\.0\.0\.1\))?: .*connection refused/,
  );
  assert.equal(c.stderr.split(`:${port}`).length - 1, 1, c.stderr);
});

test("TLSNET_DEBUG=1 adds the causes to connect and fetch failures", {
  timeout: 30_000,
}, async () => {
  const port = await deadPort();
  const [plain, debug, fetchDebug] = await Promise.all([
    run(["connect", `127.0.0.1:${port}`]),
    run(["connect", `127.0.0.1:${port}`], { env: { TLSNET_DEBUG: "1" } }),
    run(["fetch", `https://127.0.0.1:${port}/`], { env: { TLSNET_DEBUG: "1" } }),
  ]);
  assert.equal(plain.stderr.trim().split("\n").length, 1, plain.stderr);
  assert.doesNotMatch(plain.stderr, /caused by/);
  assert.equal(debug.code, 1);
  assert.match(debug.stderr, /^DialError: /m);
  assert.match(debug.stderr, /caused by: Error: connect ECONNREFUSED/);
  assert.match(debug.stderr, /fields: code="ERR_TLSNET_DIAL"/);
  assert.equal(fetchDebug.code, 1);
  assert.match(fetchDebug.stderr, new RegExp(`debug: https://127\\.0\\.0\\.1:${port}/`));
  assert.match(fetchDebug.stderr, /caused by: Error: connect ECONNREFUSED/);
});

describe("client certificates", { timeout: 60_000 }, () => {
  let pki: { dir: string; ca: string };
  let server: Proc & { port: number };
  const files: Record<string, { cert: string; key: string }> = {};
  before(async () => {
    const dir = mkdtempSync(join(WORK, "mtls-"));
    const ca = await createCA();
    pki = { dir, ca: join(dir, "ca.pem") };
    writeFileSync(pki.ca, ca.cert);
    const write = async (name: string, names: string[], client: boolean) => {
      const leaf = await ca.issue({ names, client });
      files[name] = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) };
      writeFileSync(files[name].cert, leaf.cert);
      writeFileSync(files[name].key, leaf.key);
    };
    await write("server", ["localhost", "127.0.0.1"], false);
    await write("alice", ["alice"], true);
    server = await serve([
      "--cert",
      files.server!.cert,
      "--key",
      files.server!.key,
      "--client-auth",
      "require-and-verify",
      "--client-ca",
      pki.ca,
    ]);
  });
  after(() => stop(server));

  test("require-and-verify without --client-ca is a usage error (exit 2)", async () => {
    const r = await run(["serve", "--addr", "127.0.0.1:0", "--client-auth", "require-and-verify"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /--client-auth require-and-verify verifies client certificates: give the CA that issues them with --client-ca FILE/,
    );
    assert.match(r.stderr, /^usage: tlsnet serve/m);
  });

  test("a server certificate used as a client certificate: both sides say why", async () => {
    const r = await run(
      [
        "connect",
        `127.0.0.1:${server.port}`,
        "--ca",
        pki.ca,
        "--cert",
        files.server!.cert,
        "--key",
        files.server!.key,
      ],
      { input: "hello\n" },
    );
    // The client: the handshake succeeded, then the server hung up on us (a reset, a close or,
    // should the server send one, an alert): we say it was probably our certificate, and why.
    assert.match(r.stderr, /verified\s+yes/);
    assert.match(
      r.stderr,
      new RegExp(`rejected our client certificate \\(${literal(files.server!.cert)}\\): `),
    );
    assert.match(r.stderr, /npm run -s tlsnet -- cert NAME --client/);
    // The server: INVALID_PURPOSE with the command that makes the right certificate.
    const m = await server.waitFor(
      /failed: client certificate .*INVALID_PURPOSE\]/,
      10_000,
      "stderr",
    );
    assert.match(m[0], /extended key usage lacks clientAuth/);
    assert.match(m[0], /cert NAME --client/);
    assert.doesNotMatch(m[0], /ca\/caFile|full chain/);
  });

  test("no client certificate: the server's alert names --cert and --key", async () => {
    const r = await run(["connect", `127.0.0.1:${server.port}`, "--ca", pki.ca], {
      input: "hello\n",
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /requires a client certificate; pass one with --cert FILE --key FILE/);
    assert.doesNotMatch(r.stderr, /certFile|set certs/);
  });

  test("a good client certificate works", async () => {
    const r = await run(
      [
        "connect",
        `127.0.0.1:${server.port}`,
        "--ca",
        pki.ca,
        "--cert",
        files.alice!.cert,
        "--key",
        files.alice!.key,
      ],
      { input: "hello\n" },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "hello\n");
    assert.doesNotMatch(r.stderr, /rejected/);
  });
});

test("SIGHUP with a broken dev key names the file, not --key", { timeout: 30_000 }, async (t) => {
  const home = mkdtempSync(join(WORK, "home-hup-"));
  const server = await serve([], { env: { TLSNET_HOME: home }, t });
  const keyFile = join(home, "localhost-key.pem");
  writeFileSync(keyFile, "garbage\n");
  server.child.kill("SIGHUP");
  const m = await server.waitFor(/reload failed.*/, 10_000, "stderr");
  assert.match(
    m[0],
    new RegExp(`keeping the old certificates: the dev key ${literal(keyFile)} is not PEM`),
  );
  assert.doesNotMatch(m[0], /--key|keyFile/);
  // Still serving the old certificate.
  const r = await run(["connect", `127.0.0.1:${server.port}`, "--ca", join(home, "ca.pem")], {
    input: "still\n",
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "still\n");
});

describe("file-system trouble is worded, never a raw Node error", { timeout: 60_000 }, () => {
  test("cert --dir that is a file", async () => {
    const file = join(mkdtempSync(join(WORK, "f-")), "plain-file");
    writeFileSync(file, "x");
    const r = await run(["cert", "foo.test", "--dir", file]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr.trim(),
      `tlsnet cert: cannot use ${file} as a directory: it is a file; pass --dir a directory you can write to (it is created if missing)`,
    );
  });

  test("cert --dir under a file", async () => {
    const file = join(mkdtempSync(join(WORK, "f-")), "plain-file");
    writeFileSync(file, "x");
    const r = await run(["cert", "foo.test", "--dir", join(file, "sub")]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`${literal(file)} is a file, not a directory; pass --dir`));
    assert.doesNotMatch(r.stderr, /ENOTDIR|EEXIST|mkdir '/);
  });

  test("cert --dir /proc/... fails at once (no mkdir spin)", {
    skip: process.platform !== "linux" && "needs /proc",
  }, async () => {
    const t0 = performance.now();
    // Hard limit: the Node 20 recursive-mkdir bug spins forever here.
    const r = await run(["cert", "foo.test", "--dir", "/proc/tlsnet-nope"], { killAfter: 15_000 });
    assert.notEqual(r.signal, "SIGKILL", "tlsnet cert spun on /proc and had to be killed");
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^tlsnet cert: cannot create \/proc\/tlsnet-nope: /);
    assert.match(r.stderr, /pass --dir a directory you can write to/);
    assert.doesNotMatch(r.stderr, /ENOENT|EACCES|mkdir '/);
    assert.ok(performance.now() - t0 < 15_000);
  });

  test("serve with a data dir it cannot create says TLSNET_HOME", {
    skip: process.platform !== "linux" && "needs /proc",
  }, async () => {
    const r = await run(["serve", "--addr", "127.0.0.1:0"], {
      env: { TLSNET_HOME: undefined, XDG_DATA_HOME: undefined, HOME: "/proc/tlsnet-nohome" },
      killAfter: 15_000,
    });
    assert.notEqual(r.signal, "SIGKILL", "tlsnet serve hung and had to be killed");
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^tlsnet serve: cannot create \/proc\/tlsnet-nohome: /);
    assert.match(r.stderr, /set TLSNET_HOME to a directory you can write to/);
    assert.doesNotMatch(r.stderr, /EACCES|ENOENT|mkdir '/);
  });
});

test("bench --help has an example and speaks tlsnet bench", { timeout: 60_000 }, async () => {
  const r = await run(["bench", "--help"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^tlsnet bench \[WORKLOAD\.\.\.\]/);
  assert.match(r.stdout, /\nExample:\n {2}tlsnet bench handshake --quick\n/);
  assert.match(r.stdout, /--quick/); // the suite's own options, passed on
  assert.doesNotMatch(r.stdout, /npm run bench/);
});

test("examples/cluster.ts prints a CA file that connect accepts", {
  timeout: 60_000,
}, async (t) => {
  const port = await deadPort();
  const primary = start(["examples/cluster.ts", "1", String(port)], {
    command: [process.execPath, "--import", "tsx"],
    t,
  });
  // SIGINT lets the primary stop its worker; the harness SIGKILLs whatever is left.
  t.after(() => primary.child.kill("SIGINT"));
  const m = await primary.waitFor(/^CA: (\S+)$/m, 30_000);
  await primary.waitFor(/^try: npx tlsnet connect localhost:\d+ --ca \S+$/m);
  let r = await run(["connect", `localhost:${port}`, "--ca", m[1]!], { input: "ping\n" });
  for (let i = 0; i < 20 && r.code !== 0; i++) {
    await new Promise((res) => setTimeout(res, 250)); // the worker may still be starting
    r = await run(["connect", `localhost:${port}`, "--ca", m[1]!], { input: "ping\n" });
  }
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^served by worker \d+, resumed=false\nping\n$/);
});
