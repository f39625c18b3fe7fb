/**
 * Interop with real third-party TLS stacks over loopback: OpenSSL's s_client
 * and s_server, GnuTLS's gnutls-cli and gnutls-serv, curl, and Python's ssl.
 * Each peer is a real process; every process, listener and conn is ended in
 * an after hook, also when an assertion fails. A missing peer binary skips
 * its tests with a reason that says what to install.
 *
 * Run: node --import tsx --test test/interop.test.ts
 */
import assert from "node:assert/strict";
import { after, before, describe, type TestContext, test } from "node:test";
import { createCA } from "../src/certs/index.ts";
import {
  CertificateError,
  type ConnectionState,
  type TLSConn,
  TLSError,
  type TLSListener,
  type TLSListenOptions,
  type TLSVersion,
  tls,
} from "../src/index.ts";
import {
  freePort,
  Inbox,
  killAll,
  missing,
  type Peer,
  type PemDir,
  pemDir,
  runPeer,
  startPeer,
  waitForPort,
} from "./helpers/peers.ts";

/** Options of a test that needs `bins`: a 20 s timeout, skipped with a visible reason if one is missing. */
function needs(...bins: string[]): { timeout: number; skip: string | false } {
  return { timeout: 20_000, skip: missing(...bins) };
}
const VERSIONS: readonly TLSVersion[] = ["TLSv1.3", "TLSv1.2"];

/** PEM text and files shared by every test: one CA, a localhost leaf, and an unrelated CA. */
let dir: PemDir;
let caPem: string;
let otherCaPem: string;
let certPem: string;
let keyPem: string;
const files = { ca: "", otherCa: "", cert: "", key: "" };

before(async () => {
  const ca = await createCA();
  const other = await createCA({ name: "tlsnet interop unrelated CA" });
  const leaf = await ca.issue({ names: ["localhost", "127.0.0.1"] });
  caPem = ca.cert;
  otherCaPem = other.cert;
  certPem = leaf.chain;
  keyPem = leaf.key;
  dir = await pemDir();
  files.ca = await dir.file("ca.pem", caPem);
  files.otherCa = await dir.file("other-ca.pem", otherCaPem);
  files.cert = await dir.file("cert.pem", certPem);
  files.key = await dir.file("key.pem", keyPem);
});

after(async () => {
  await killAll();
  await dir?.remove();
});

/** Kill `peer` when the test ends, pass or fail. */
function own(t: TestContext, peer: Peer): Peer {
  t.after(() => peer.kill());
  return peer;
}

/** Close `c` when the test ends, pass or fail. */
function closeAfter<C extends { close(): Promise<void> }>(t: TestContext, c: C): C {
  t.after(() => c.close());
  return c;
}

/**
 * A tlsnet TLS listener on 127.0.0.1 serving the localhost leaf. With no
 * handler given it echoes. `states` gets the state of every conn whose
 * handshake succeeded, `errors` everything sent to onError.
 */
async function server(
  t: TestContext,
  extra: Partial<TLSListenOptions> = {},
): Promise<{ ln: TLSListener; states: Inbox<ConnectionState>; errors: Inbox<Error> }> {
  const states = new Inbox<ConnectionState>();
  const errors = new Inbox<Error>();
  const handler = extra.handler ?? echo;
  const ln = await tls.listen({
    addr: "127.0.0.1:0",
    certs: [{ cert: certPem, key: keyPem }],
    ...extra,
    handler: async (conn: TLSConn) => {
      states.push(conn.state());
      await handler(conn);
    },
    onError: (err) => errors.push(err),
  });
  closeAfter(t, ln);
  return { ln, states, errors };
}

async function echo(conn: TLSConn): Promise<void> {
  for await (const chunk of conn) await conn.write(chunk);
}

/** Start `openssl s_server` on a free loopback port and wait for its ACCEPT banner. */
async function sServer(t: TestContext, args: string[]): Promise<{ peer: Peer; port: number }> {
  const port = await freePort();
  const peer = own(
    t,
    startPeer("openssl", [
      "s_server",
      "-accept",
      `127.0.0.1:${port}`,
      "-cert",
      files.cert,
      "-key",
      files.key,
      "-naccept",
      "1",
      ...args,
    ]),
  );
  await peer.waitFor(/^ACCEPT$/m);
  return { peer, port };
}

// ---------------------------------------------------------------------------
// 1. openssl s_client → tlsnet server

/** `openssl s_client` to our listener as "localhost", trusting `caFile`, plus `extra` flags. */
function sClient(port: number, caFile: string, extra: readonly string[] = []): Peer {
  const args = ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost"];
  return startPeer("openssl", [...args, "-CAfile", caFile, ...extra]);
}

describe("openssl s_client → tlsnet server", () => {
  for (const version of VERSIONS) {
    const flag = version === "TLSv1.3" ? "-tls1_3" : "-tls1_2";
    test(
      `${version} (${flag}), ALPN h2 chosen from h2,http/1.1, line echoed`,
      needs("openssl"),
      async (t) => {
        const { ln, states } = await server(t, { alpnProtocols: ["h2", "http/1.1"] });
        const sc = own(
          t,
          sClient(ln.addr.port, files.ca, ["-verify_return_error", flag, "-alpn", "h2,http/1.1"]),
        );
        // The handshake summary ends with the verify result; then the session is open.
        await sc.waitFor("Verify return code: 0 (ok)");
        sc.write("hello from s_client\n");
        await sc.waitFor(/^hello from s_client$/m);
        sc.endInput(); // s_client without -ign_eof sends close_notify and exits at stdin EOF
        const exit = await sc.waitExit(10_000);
        assert.equal(exit.code, 0, sc.describe());

        const out = sc.stdout;
        assert.match(out, new RegExp(`^New, ${version.replace(".", "\\.")}, Cipher is \\S+$`, "m"));
        assert.match(out, /^ALPN protocol: h2$/m, sc.describe());
        assert.match(out, /^Verification: OK$/m);
        // TLS 1.2 prints the session at once; TLS 1.3 with the post-handshake ticket.
        assert.ok(out.includes(`    Protocol  : ${version}\n`), sc.describe());
        assert.match(sc.stderr, /^depth=0 O = tlsnet, CN = localhost$/m);

        const st = await states.next(5000, "server-side state");
        assert.equal(st.handshakeComplete, true);
        assert.equal(st.version, version);
        assert.equal(st.alpnProtocol, "h2");
        assert.equal(st.serverName, "localhost");
        assert.equal(st.resumed, false);
        assert.deepEqual(st.peerCertificates, []); // no client certificate asked for
        const cipher = /^New, \S+, Cipher is (\S+)$/m.exec(out)?.[1];
        if (version === "TLSv1.3") {
          assert.equal(st.cipherSuite, cipher, "IANA and OpenSSL names agree for TLS 1.3 suites");
        } else {
          assert.match(cipher ?? "", /^ECDHE-ECDSA-/);
          assert.match(st.cipherSuite ?? "", /^TLS_ECDHE_ECDSA_WITH_/);
        }
        assert.equal(ln.stats().handshakeFailures, 0);
      },
    );
  }
});

// ---------------------------------------------------------------------------
// 2. tlsnet client → openssl s_server

describe("tlsnet client → openssl s_server", () => {
  for (const version of VERSIONS) {
    test(`${version}, ALPN h2, lines reversed by s_server -rev`, needs("openssl"), async (t) => {
      const { peer, port } = await sServer(t, ["-rev", "-alpn", "h2"]);
      const conn = closeAfter(
        t,
        await tls.connect(`localhost:${port}`, {
          ca: caPem,
          alpnProtocols: ["h2", "http/1.1"],
          maxVersion: version,
          timeout: 10_000,
        }),
      );
      const st = conn.state();
      assert.equal(st.handshakeComplete, true);
      assert.equal(st.version, version);
      assert.equal(st.alpnProtocol, "h2");
      assert.equal(conn.alpnProtocol, "h2");
      assert.equal(st.verified, true);
      assert.equal(st.serverName, "localhost");
      const leaf = conn.peerCertificate();
      assert.ok(leaf, "peer certificate present");
      assert.ok(leaf.subjectAltNames.includes("DNS:localhost"), leaf.subjectAltNames.join());
      assert.match(leaf.subject, /CN=localhost/);
      assert.match(leaf.issuer, /CN=tlsnet dev CA /);

      await conn.write("hello world\n");
      assert.equal(await conn.readLine({ timeout: 5000 }), "dlrow olleh");
      await conn.write("second line\n");
      assert.equal(await conn.readLine({ timeout: 5000 }), "enil dnoces");
      await conn.close();

      const exit = await peer.waitExit(10_000); // -naccept 1: exits after our conn
      assert.equal(exit.code, 0, peer.describe());
      assert.match(
        peer.stderr,
        new RegExp(`^Protocol version: ${version.replace(".", "\\.")}$`, "m"),
      );
      assert.match(peer.stdout, /^ALPN protocols advertised by the client: h2, http\/1\.1$/m);
      assert.match(peer.stdout, /^ALPN protocols selected: h2$/m);
    });
  }

  test(
    "s_server -www: HTTP/1.0 GET over TLS 1.3, status page names the session",
    needs("openssl"),
    async (t) => {
      const { peer, port } = await sServer(t, ["-www"]);
      const conn = closeAfter(
        t,
        await tls.connect(`localhost:${port}`, { ca: caPem, timeout: 10_000 }),
      );
      assert.equal(conn.state().version, "TLSv1.3");
      assert.equal(conn.state().verified, true);
      assert.equal(conn.alpnProtocol, null, "no ALPN offered, none negotiated");
      await conn.write("GET / HTTP/1.0\r\n\r\n");
      const page = (await conn.readAll({ timeout: 5000, maxBytes: 1 << 20 })).toString("utf8");
      assert.match(page, /^HTTP\/1\.0 200 ok\r\n/);
      assert.match(page, /Protocol {2}: TLSv1\.3/);
      assert.ok(page.includes(`Cipher    : ${conn.state().cipherSuite}`), page);
      await conn.close();
      assert.equal((await peer.waitExit(10_000)).code, 0, peer.describe());
    },
  );
});

// ---------------------------------------------------------------------------
// 3. GnuTLS and curl

describe("gnutls-cli → tlsnet server", () => {
  for (const version of VERSIONS) {
    const prio = version === "TLSv1.3" ? [] : ["--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.2"];
    const gnutlsName = version === "TLSv1.3" ? "TLS1.3" : "TLS1.2";
    test(`${version}, ALPN http/1.1, line echoed`, needs("gnutls-cli"), async (t) => {
      const { ln, states } = await server(t, { alpnProtocols: ["h2", "http/1.1"] });
      const cli = own(
        t,
        startPeer("gnutls-cli", [
          "--x509cafile",
          files.ca,
          "-p",
          String(ln.addr.port),
          "--alpn",
          "http/1.1",
          ...prio,
          "localhost",
        ]),
      );
      await cli.waitFor("- Handshake was completed");
      cli.write("hello from gnutls\n");
      await cli.waitFor(/^hello from gnutls$/m);
      cli.endInput(); // gnutls-cli sends close_notify at stdin EOF; our handler then closes
      const exit = await cli.waitExit(10_000);
      assert.equal(exit.code, 0, cli.describe());
      assert.match(cli.stdout, /^- Status: The certificate is trusted\. $/m, cli.describe());
      assert.match(
        cli.stdout,
        new RegExp(`^- Description: \\(${gnutlsName.replace(".", "\\.")}-X\\.509\\)`, "m"),
      );
      assert.match(cli.stdout, /^- Application protocol: http\/1\.1$/m);

      const st = await states.next(5000, "server-side state");
      assert.equal(st.version, version);
      assert.equal(st.alpnProtocol, "http/1.1");
      assert.equal(st.serverName, "localhost");
    });
  }
});

describe("tlsnet client → gnutls-serv --echo", () => {
  for (const version of VERSIONS) {
    test(`${version}, ALPN h2, line echoed`, needs("gnutls-serv"), async (t) => {
      const port = await freePort();
      // gnutls-serv has no bind-address option: it listens on 0.0.0.0 and :: (we only dial 127.0.0.1).
      const srv = own(
        t,
        startPeer("gnutls-serv", [
          "--echo",
          "-p",
          String(port),
          "--x509certfile",
          files.cert,
          "--x509keyfile",
          files.key,
          "--alpn",
          "h2",
          "--disable-client-cert",
        ]),
      );
      await waitForPort(port, { peer: srv, timeout: 10_000 });
      const conn = closeAfter(
        t,
        await tls.connect(`localhost:${port}`, {
          ca: caPem,
          alpnProtocols: ["h2"],
          maxVersion: version,
          timeout: 10_000,
        }),
      );
      const st = conn.state();
      assert.equal(st.version, version);
      assert.equal(st.alpnProtocol, "h2");
      assert.equal(st.verified, true);
      await conn.write("echo me please\n");
      assert.equal(await conn.readLine({ timeout: 5000 }), "echo me please");
      await conn.close();
      const gnutlsName = version === "TLSv1.3" ? "TLS1.3" : "TLS1.2";
      await srv.waitFor(`- Version: ${gnutlsName}`);
      await srv.waitFor("- Given server name[1]: localhost");
      await srv.waitFor("- Application protocol: h2");
    });
  }
});

describe("curl → tlsnet HTTP/1.1 responder", () => {
  for (const version of VERSIONS) {
    test(
      `${version}: GET https://localhost:PORT/, verified, ALPN http/1.1`,
      needs("curl"),
      async (t) => {
        const requests = new Inbox<string[]>();
        const { ln, states } = await server(t, {
          alpnProtocols: ["http/1.1"],
          handler: async (conn) => {
            const head: string[] = [];
            for (;;) {
              const line = await conn.readLine({ timeout: 5000, maxBytes: 16 * 1024 });
              if (line === null || line === "") break;
              head.push(line);
            }
            requests.push(head);
            const body = `hello from tlsnet over ${conn.state().version}\n`;
            await conn.write(
              "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" +
                `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
            );
          },
        });
        const port = ln.addr.port;
        const curl = await runPeer(
          "curl",
          [
            "-sS",
            "-v",
            "--cacert",
            files.ca,
            "--resolve",
            `localhost:${port}:127.0.0.1`, // loopback IPv4 only, no DNS
            ...(version === "TLSv1.2" ? ["--tls-max", "1.2"] : ["--tlsv1.3"]),
            "-w",
            "\n%{http_code} %{http_version} %{ssl_verify_result}\n",
            `https://localhost:${port}/path?q=1`,
          ],
          { timeout: 15_000 },
        );
        assert.equal(curl.exit?.code, 0, curl.describe());
        assert.equal(
          curl.stdout,
          `hello from tlsnet over ${version}\n\n200 1.1 0\n`,
          curl.describe(),
        );
        assert.match(
          curl.stderr,
          new RegExp(`SSL connection using ${version.replace(".", "\\.")} / `),
        );
        assert.match(curl.stderr, /ALPN: server accepted http\/1\.1/);
        assert.match(curl.stderr, /SSL certificate verify ok\./);

        const head = await requests.next(5000, "request head");
        assert.equal(head[0], "GET /path?q=1 HTTP/1.1");
        assert.ok(head.includes(`Host: localhost:${port}`), head.join(" | "));
        const st = await states.next(5000, "server-side state");
        assert.equal(st.version, version);
        assert.equal(st.alpnProtocol, "http/1.1");
        assert.equal(st.serverName, "localhost");
      },
    );
  }

  test(
    "curl with an unrelated CA refuses our server (exit 60); our server reports a TLSError",
    needs("curl"),
    async (t) => {
      const { ln, errors, states } = await server(t);
      const port = ln.addr.port;
      const curl = await runPeer(
        "curl",
        [
          "-sS",
          "--cacert",
          files.otherCa,
          "--resolve",
          `localhost:${port}:127.0.0.1`,
          `https://localhost:${port}/`,
        ],
        { timeout: 15_000 },
      );
      assert.equal(curl.exit?.code, 60, curl.describe()); // CURLE_PEER_FAILED_VERIFICATION
      assert.match(curl.stderr, /SSL certificate problem: unable to get local issuer certificate/);
      const err = await errors.next(5000, "server onError");
      assert.ok(err instanceof TLSError, `${err.name}: ${err.message}`);
      assert.equal(err.reason, "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA");
      assert.equal(states.size, 0, "the handler never ran");
    },
  );
});

// ---------------------------------------------------------------------------
// 4. Failures with a real peer

describe("failures against OpenSSL", () => {
  test(
    "s_client trusting another CA: verify error 20 on its side, TLSError (unknown_ca) on ours",
    needs("openssl"),
    async (t) => {
      const { ln, errors, states } = await server(t);
      const sc = own(t, sClient(ln.addr.port, files.otherCa, ["-verify_return_error"]));
      sc.endInput();
      const exit = await sc.waitExit(10_000);
      assert.equal(exit.code, 1, sc.describe());
      assert.match(sc.stdout, /^Verification error: unable to get local issuer certificate$/m);
      assert.match(
        sc.stdout,
        /^Verify return code: 20 \(unable to get local issuer certificate\)$/m,
      );
      assert.match(sc.stderr, /verify error:num=20:unable to get local issuer certificate/);
      assert.match(sc.stderr, /certificate verify failed/);

      const err = await errors.next(5000, "server onError");
      assert.ok(err instanceof TLSError, `${err.name}: ${err.message}`);
      assert.equal(err.code, "ERR_TLSNET_TLS");
      assert.equal(err.reason, "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA");
      assert.equal(states.size, 0, "the handler never ran");
      assert.equal(ln.stats().handshakeFailures, 1);
    },
  );

  test(
    "s_client trusting another CA, lazy accept(): handshake() rejects with TLSError",
    needs("openssl"),
    async (t) => {
      const ln = closeAfter(
        t,
        await tls.listen({ addr: "127.0.0.1:0", certs: [{ cert: certPem, key: keyPem }] }),
      );
      const sc = own(t, sClient(ln.addr.port, files.otherCa, ["-verify_return_error", "-tls1_2"]));
      sc.endInput();
      const conn = closeAfter(t, await ln.accept({ timeout: 10_000 }));
      await assert.rejects(conn.handshake({ timeout: 10_000 }), (err: unknown) => {
        assert.ok(err instanceof TLSError, String(err));
        assert.equal(err.reason, "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA");
        return true;
      });
      assert.equal(conn.state().handshakeComplete, false);
      const exit = await sc.waitExit(10_000);
      assert.equal(exit.code, 1, sc.describe());
      // With TLS 1.2, OpenSSL 3.0 prints the verify failure here, not as a "Verify return code" line.
      assert.match(sc.stdout, /^Verification error: unable to get local issuer certificate$/m);
      assert.match(sc.stderr, /verify error:num=20:unable to get local issuer certificate/);
    },
  );

  for (const version of VERSIONS) {
    const flag = version === "TLSv1.3" ? "-tls1_3" : "-tls1_2";
    test(
      `${version}: s_client offering ALPN x-none gets alert 120 from our server; onError names both lists`,
      needs("openssl"),
      async (t) => {
        const { ln, errors, states } = await server(t, { alpnProtocols: ["h2", "http/1.1"] });
        const sc = own(t, sClient(ln.addr.port, files.ca, ["-alpn", "x-none", flag]));
        sc.endInput();
        const exit = await sc.waitExit(10_000);
        assert.equal(exit.code, 1, sc.describe());
        assert.match(sc.stderr, /tlsv1 alert no application protocol.*SSL alert number 120/);
        assert.match(sc.stdout, /^No ALPN negotiated$/m);

        const err = await errors.next(5000, "server onError");
        assert.ok(err instanceof TLSError, `${err.name}: ${err.message}`);
        assert.match(err.reason ?? "", /NO_APPLICATION_PROTOCOL/);
        assert.match(err.message, /x-none/);
        assert.match(err.message, /h2/);
        assert.equal(states.size, 0, "the handler never ran");
      },
    );
  }

  test(
    "tlsnet client vs s_server with a certificate from an untrusted CA: CertificateError",
    needs("openssl"),
    async (t) => {
      const { peer, port } = await sServer(t, []);
      await assert.rejects(
        tls.connect(`localhost:${port}`, { ca: otherCaPem, timeout: 10_000 }),
        (err: unknown) => {
          assert.ok(err instanceof CertificateError, String(err));
          assert.ok(err instanceof TLSError);
          assert.equal(err.code, "ERR_TLSNET_CERT");
          assert.equal(err.reason, "UNABLE_TO_VERIFY_LEAF_SIGNATURE");
          assert.equal(err.host, "localhost");
          assert.match(err.subject ?? "", /CN=localhost/);
          assert.match(err.message, /localhost/);
          return true;
        },
      );
      // s_server saw the client go away; it exits after its single connection.
      assert.equal((await peer.waitExit(10_000)).code, 0, peer.describe());
    },
  );

  for (const version of VERSIONS) {
    test(
      `${version}: offering ALPN ["x-none"] to s_server -alpn h2 fails with alert 120`,
      needs("openssl"),
      async (t) => {
        const { peer, port } = await sServer(t, ["-alpn", "h2"]);
        await assert.rejects(
          tls.connect(`localhost:${port}`, {
            ca: caPem,
            alpnProtocols: ["x-none"],
            maxVersion: version,
            timeout: 10_000,
          }),
          (err: unknown) => {
            assert.ok(err instanceof TLSError, String(err));
            assert.ok(!(err instanceof CertificateError));
            assert.equal(err.reason, "ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL");
            assert.match(err.message, /x-none/);
            return true;
          },
        );
        assert.equal((await peer.waitExit(10_000)).code, 0, peer.describe());
        assert.match(peer.stdout, /^ALPN protocols advertised by the client: x-none$/m);
        assert.match(peer.stderr, /tls_handle_alpn:no application protocol/);
      },
    );
  }
});

// ---------------------------------------------------------------------------
// 5. Python's ssl module

const PY_CLIENT = `
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.set_alpn_protocols(["h2", "http/1.1"])
with socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=10) as sock:
    with ctx.wrap_socket(sock, server_hostname="localhost") as ssock:
        ssock.sendall(b"hello from python\\n")
        buf = b""
        while not buf.endswith(b"\\n"):
            chunk = ssock.recv(4096)
            if not chunk:
                break
            buf += chunk
        print("ECHO " + buf.decode().rstrip("\\n"))
        print("VERSION " + str(ssock.version()))
        print("ALPN " + str(ssock.selected_alpn_protocol()))
`;

describe("python3 ssl client → tlsnet server", () => {
  for (const version of VERSIONS) {
    test(
      `${version}: create_default_context(cafile=...) verifies, echoes, reports the version`,
      needs("python3"),
      async (t) => {
        const { ln, states } = await server(t, {
          maxVersion: version,
          alpnProtocols: ["http/1.1", "h2"],
        });
        const py = await runPeer("python3", ["-c", PY_CLIENT, files.ca, String(ln.addr.port)], {
          timeout: 15_000,
        });
        assert.equal(py.exit?.code, 0, py.describe());
        const lines = py.stdout.trimEnd().split("\n");
        assert.deepEqual(
          lines,
          ["ECHO hello from python", `VERSION ${version}`, "ALPN http/1.1"],
          py.describe(),
        );
        const st = await states.next(5000, "server-side state");
        assert.equal(st.version, version);
        assert.equal(
          st.alpnProtocol,
          "http/1.1",
          "server preference wins over the client's h2-first list",
        );
        assert.equal(st.serverName, "localhost");
      },
    );
  }
});
