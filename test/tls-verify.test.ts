/** Peer verification: each failure is a CertificateError with OpenSSL's reason; the good cases pass. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { createCA } from "../src/certs/index.ts";
import { type CertEntry, CertificateError, tls } from "../src/index.ts";
import { echoServer } from "./helpers/tls.ts";

const DAY = 24 * 3600 * 1000;

/** A self-signed server certificate for localhost, made by the openssl CLI (a leaf, not a CA). */
function selfSignedLeaf(): CertEntry {
  const dir = mkdtempSync(join(tmpdir(), "tlsnet-self-"));
  try {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-days",
        "2",
        "-keyout",
        join(dir, "key.pem"),
        "-out",
        join(dir, "cert.pem"),
      ],
      { stdio: "ignore" },
    );
    return {
      cert: readFileSync(join(dir, "cert.pem"), "utf8"),
      key: readFileSync(join(dir, "key.pem"), "utf8"),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Serve `certs` and connect to it as `host` with `opts`; the outcome of the connect. */
async function dialWith(
  certs: CertEntry[],
  host: string,
  opts: Parameters<typeof tls.connect>[1],
): Promise<{ error?: unknown; verified?: boolean; subject?: string | undefined }> {
  const ln = await echoServer({ certs });
  try {
    const conn = await tls.connect(`${host}:${ln.addr.port}`, opts);
    const r = { verified: conn.state().verified, subject: conn.peerCertificate()?.subject };
    await conn.write("ok");
    assert.equal((await conn.readExactly(2)).toString(), "ok");
    await conn.close();
    return r;
  } catch (error) {
    return { error };
  } finally {
    await ln.close();
  }
}

function assertCertError(error: unknown, reason: string | RegExp, host?: string): void {
  assert.ok(error instanceof CertificateError, `expected CertificateError, got ${String(error)}`);
  assert.equal(error.code, "ERR_TLSNET_CERT");
  if (typeof reason === "string") assert.equal(error.reason, reason);
  else assert.match(error.reason ?? "", reason);
  if (host) assert.equal(error.host, host);
  assert.ok(error.subject, "the peer's subject is named");
  assert.ok(error.message.includes(error.subject ?? "?"), error.message);
}

describe("verification failures", () => {
  test("expired", async () => {
    const ca = await createCA();
    const leaf = await ca.issue({
      names: ["localhost"],
      validFrom: new Date(Date.now() - 400 * DAY),
      validDays: 30,
    });
    const r = await dialWith([leaf], "localhost", { ca: ca.cert });
    assertCertError(r.error, "CERT_HAS_EXPIRED", "localhost");
    assert.match(
      (r.error as Error).message,
      /expired \(notAfter \d{4}-\d\d-\d\d\); renew it or fix the clock/,
    );
  });

  test("not yet valid", async () => {
    const ca = await createCA();
    const leaf = await ca.issue({
      names: ["localhost"],
      validFrom: new Date(Date.now() + 30 * DAY),
      validDays: 30,
    });
    const r = await dialWith([leaf], "localhost", { ca: ca.cert });
    assertCertError(r.error, "CERT_NOT_YET_VALID", "localhost");
  });

  test("wrong host name", async () => {
    const ca = await createCA();
    const leaf = await ca.issue({ names: ["other.test"] });
    const r = await dialWith([leaf], "localhost", { ca: ca.cert });
    assertCertError(r.error, "ERR_TLS_CERT_ALTNAME_INVALID", "localhost");
    assert.match((r.error as Error).message, /CN=other\.test/);
  });

  test("self-signed leaf", async () => {
    const r = await dialWith([selfSignedLeaf()], "localhost", {});
    assertCertError(r.error, "DEPTH_ZERO_SELF_SIGNED_CERT");
  });

  test("unknown CA", async () => {
    const ca = await createCA();
    const stranger = await createCA();
    const leaf = await ca.issue({ names: ["localhost"] });
    const r = await dialWith([leaf], "localhost", { ca: stranger.cert });
    assertCertError(r.error, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY/);
  });

  test("untrusted root sent in the chain", async () => {
    const ca = await createCA();
    const inter = await ca.issue({ names: [], intermediate: true });
    const leaf = await inter.ca.issue({ names: ["localhost"] });
    const chainWithRoot = leaf.chain + ca.cert;
    const r = await dialWith([{ cert: chainWithRoot, key: leaf.key }], "localhost", {});
    assertCertError(r.error, "SELF_SIGNED_CERT_IN_CHAIN");
  });

  test("chain missing its intermediate", async () => {
    const ca = await createCA();
    const inter = await ca.issue({ names: [], intermediate: true });
    const leaf = await inter.ca.issue({ names: ["localhost"] });
    const r = await dialWith([{ cert: leaf.leaf, key: leaf.key }], "localhost", { ca: ca.cert });
    assertCertError(r.error, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY/);
  });
});

describe("verification successes", () => {
  test("right CA", async () => {
    const ca = await createCA();
    const leaf = await ca.issue({ names: ["localhost"] });
    const r = await dialWith([leaf], "localhost", { ca: ca.cert });
    assert.equal(r.error, undefined);
    assert.equal(r.verified, true);
  });

  test("intermediate served in the chain", async () => {
    const ca = await createCA();
    const inter = await ca.issue({ names: [], intermediate: true });
    const leaf = await inter.ca.issue({ names: ["localhost"] });
    const r = await dialWith([{ cert: leaf.chain, key: leaf.key }], "localhost", { ca: ca.cert });
    assert.equal(r.error, undefined, String(r.error));
    assert.equal(r.verified, true);
  });

  test("IP literal against an IP SAN (and no SNI sent)", async (t) => {
    const ca = await createCA();
    const leaf = await ca.issue({ names: ["127.0.0.1"] });
    const ln = await echoServer({ certs: [leaf] });
    t.after(() => ln.close());
    const conn = await tls.connect(`127.0.0.1:${ln.addr.port}`, { ca: ca.cert });
    t.after(() => conn.close());
    assert.equal(conn.state().verified, true);
    assert.equal(conn.state().serverName, null);
    await conn.close();
    // The name must really be checked: a DNS-only certificate fails for the IP.
    const dnsOnly = await ca.issue({ names: ["localhost"] });
    const r = await dialWith([dnsOnly], "127.0.0.1", { ca: ca.cert });
    assertCertError(r.error, "ERR_TLS_CERT_ALTNAME_INVALID", "127.0.0.1");
    await ln.close();
  });

  test("verifyPeer: false accepts a self-signed certificate and reports verified: false", async () => {
    const r = await dialWith([selfSignedLeaf()], "localhost", { verifyPeer: false });
    assert.equal(r.error, undefined);
    assert.equal(r.verified, false);
    assert.match(r.subject ?? "", /CN=localhost/);
  });

  test("caFile as an OpenSSL hashed directory or a bundle file", async () => {
    const { mkdtemp, writeFile, rm } = await import("node:fs/promises");
    const ca = await createCA();
    const leaf = await ca.issue({ names: ["localhost"] });
    const dir = await mkdtemp(join(tmpdir(), "tlsnet-ca-"));
    try {
      await writeFile(join(dir, "root.pem"), ca.cert);
      const viaDir = await dialWith([leaf], "localhost", { caFile: dir });
      assert.equal(viaDir.verified, true, String(viaDir.error));
      const viaFile = await dialWith([leaf], "localhost", { caFile: join(dir, "root.pem") });
      assert.equal(viaFile.verified, true, String(viaFile.error));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
