import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { type CA, createCA, type IssuedCert, type KeyType, loadCA } from "../src/certs/index.ts";

const KEY_TYPES: KeyType[] = ["ec-p256", "rsa-2048", "ed25519"];
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const x509 = (pem: string) => new X509Certificate(pem);

/** Splits a PEM bundle into its certificates. */
function pemBlocks(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
}

/** Asserts two instants are within `slackMs` (X.509 times have whole-second precision). */
function assertNear(actual: Date, expected: Date, slackMs = 2_000): void {
  const diff = Math.abs(actual.getTime() - expected.getTime());
  assert.ok(diff <= slackMs, `${actual.toISOString()} is not near ${expected.toISOString()}`);
}

// --- openssl -----------------------------------------------------------------------------------

/** CI installs openssl; where it cannot, the checks that need the binary are skipped. */
const HAVE_OPENSSL = (() => {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();
const needsOpenssl = { skip: HAVE_OPENSSL ? false : "openssl binary not found" };

let dir = "";
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "tlsnet-certs-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let fileCount = 0;
/** Writes PEM text to a fresh file in the temp dir and returns its path. */
async function pemFile(pem: string): Promise<string> {
  const path = join(dir, `${fileCount++}.pem`);
  await writeFile(path, pem);
  return path;
}

/** Runs the openssl binary; resolves with its exit code and combined output, never rejects. */
function openssl(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile("openssl", args, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, out: stdout + stderr });
    });
  });
}

async function opensslText(pem: string): Promise<string> {
  const { code, out } = await openssl(["x509", "-text", "-noout", "-in", await pemFile(pem)]);
  assert.equal(code, 0, out);
  return out;
}

// --- TLS over loopback --------------------------------------------------------------------------

interface HandshakeResult {
  ok: boolean;
  /** The client-side error code when the handshake failed. */
  code?: string | undefined;
  /** What the server sent after the handshake. */
  data?: string;
}

/** One TLS connection to a throwaway server on 127.0.0.1; everything is closed before returning. */
async function handshake(
  serverOpts: tls.TlsOptions,
  clientOpts: tls.ConnectionOptions,
): Promise<HandshakeResult> {
  // With requestCert but not rejectUnauthorized, report why the client certificate was refused.
  const server = tls.createServer(serverOpts, (socket) =>
    socket.end(
      socket.authorized || !serverOpts.requestCert ? "hello" : String(socket.authorizationError),
    ),
  );
  server.on("tlsClientError", () => {}); // the client side reports the failure
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  try {
    return await new Promise<HandshakeResult>((resolve) => {
      const socket = tls.connect({ host: "127.0.0.1", port, ...clientOpts });
      let data = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk) => (data += chunk));
      socket.on("end", () => resolve({ ok: true, data }));
      socket.on("error", (err: NodeJS.ErrnoException) => {
        socket.destroy();
        resolve({ ok: false, code: err.code });
      });
    });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

// --- tests --------------------------------------------------------------------------------------

describe("createCA", () => {
  it("makes a self-signed root with the documented defaults", async () => {
    const start = Date.now();
    const ca = await createCA();
    const cert = x509(ca.cert);
    assert.match(cert.subject, /^O=tlsnet\nCN=tlsnet dev CA [0-9a-f]{12}$/);
    assert.equal(cert.issuer, cert.subject);
    assert.equal(cert.ca, true);
    assert.ok(cert.checkIssued(cert));
    assert.ok(cert.verify(cert.publicKey));
    assert.ok(ca.cert.startsWith("-----BEGIN CERTIFICATE-----\n"));
    assert.ok(ca.key.startsWith("-----BEGIN PRIVATE KEY-----\n"));
    assert.ok(ca.key.endsWith("-----END PRIVATE KEY-----\n"));
    // Default key: ECDSA P-256.
    const key = createPrivateKey(ca.key);
    assert.equal(key.asymmetricKeyType, "ec");
    assert.equal(key.asymmetricKeyDetails?.namedCurve, "prime256v1");
    // Backdated one hour, valid 3650 days from then.
    const from = new Date(cert.validFrom);
    assertNear(from, new Date(start - HOUR));
    assertNear(new Date(cert.validTo), new Date(from.getTime() + 3650 * DAY));
  });

  it("has CA:true, keyCertSign+cRLSign (critical) and an SKI", needsOpenssl, async () => {
    const text = await opensslText((await createCA()).cert);
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE\n/);
    assert.match(text, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
    assert.match(text, /X509v3 Subject Key Identifier:/);
    assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
  });

  it("gives every CA a distinct name and a positive 16-byte serial", async () => {
    const [a, b] = await Promise.all([createCA(), createCA()]);
    assert.notEqual(x509(a.cert).subject, x509(b.cert).subject);
    for (const ca of [a, b]) {
      const serial = x509(ca.cert).serialNumber;
      assert.match(serial, /^[0-7][0-9A-F]{31}$/, serial);
    }
  });

  it("honours name and validDays", async () => {
    const ca = await createCA({ name: "My Test CA, Inc.", validDays: 2 });
    const cert = x509(ca.cert);
    assert.match(cert.subject, /CN=My Test CA\\, Inc\.$/); // Node escapes the comma
    assertNear(new Date(cert.validTo), new Date(new Date(cert.validFrom).getTime() + 2 * DAY));
  });
});

describe("key types", () => {
  const expected: Record<KeyType, { type: string; sig: RegExp }> = {
    "ec-p256": { type: "ec", sig: /ecdsa-with-SHA256/ },
    "rsa-2048": { type: "rsa", sig: /sha256WithRSAEncryption/ },
    ed25519: { type: "ed25519", sig: /ED25519/ },
  };

  for (const keyType of KEY_TYPES) {
    it(`${keyType}: CA and leaf keys have the right algorithm and parameters`, async () => {
      const ca = await createCA({ keyType });
      const leaf = await ca.issue({ names: ["localhost"], keyType });
      for (const pem of [ca.key, leaf.key]) {
        assert.ok(pem.startsWith("-----BEGIN PRIVATE KEY-----\n"));
        const key = createPrivateKey(pem);
        assert.equal(key.asymmetricKeyType, expected[keyType].type);
        if (keyType === "ec-p256") assert.equal(key.asymmetricKeyDetails?.namedCurve, "prime256v1");
        if (keyType === "rsa-2048") {
          assert.equal(key.asymmetricKeyDetails?.modulusLength, 2048);
          assert.equal(key.asymmetricKeyDetails?.publicExponent, 65537n);
        }
      }
      // The leaf's public key matches its private key, and the CA signature checks out.
      const cert = x509(leaf.cert);
      assert.ok(cert.checkPrivateKey(createPrivateKey(leaf.key)));
      assert.ok(cert.verify(x509(ca.cert).publicKey));
      if (HAVE_OPENSSL) assert.match(await opensslText(leaf.cert), expected[keyType].sig);
    });
  }

  it("a CA of each key type issues leaves of every key type", async () => {
    for (const caType of KEY_TYPES) {
      const ca = await createCA({ keyType: caType });
      const caCert = x509(ca.cert);
      for (const leafType of KEY_TYPES) {
        const leaf = x509((await ca.issue({ names: ["localhost"], keyType: leafType })).cert);
        assert.ok(leaf.checkIssued(caCert), `${caType} -> ${leafType}`);
        assert.ok(leaf.verify(caCert.publicKey), `${caType} -> ${leafType}`);
      }
    }
  });
});

describe("CA.issue", () => {
  let ca: CA;
  before(async () => {
    ca = await createCA();
  });

  it("makes a leaf with DNS, wildcard and IP SANs, signed by the CA", async () => {
    const names = ["localhost", "*.b.test", "127.0.0.1", "::1", "::ffff:10.0.0.1", "fe80::1"];
    const leaf = await ca.issue({ names });
    const cert = x509(leaf.cert);
    const caCert = x509(ca.cert);
    assert.equal(cert.subject, "O=tlsnet\nCN=localhost");
    assert.equal(cert.issuer, caCert.subject);
    assert.equal(
      cert.subjectAltName,
      "DNS:localhost, DNS:*.b.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, " +
        "IP Address:0:0:0:0:0:FFFF:A00:1, IP Address:FE80:0:0:0:0:0:0:1",
    );
    assert.equal(cert.ca, false);
    assert.ok(cert.checkIssued(caCert));
    assert.ok(cert.verify(caCert.publicKey));
    assert.notEqual(cert.serialNumber, caCert.serialNumber);
    // A root's leaf has no intermediates: cert (and chain) is the leaf alone.
    assert.equal(leaf.cert, leaf.leaf);
    assert.equal(leaf.chain, leaf.cert);
    assert.equal("ca" in leaf, false);
  });

  it("uses commonName when given, and defaults validity to 825 days from an hour ago", async () => {
    const start = Date.now();
    const cert = x509((await ca.issue({ names: ["a.test"], commonName: "Some Service" })).cert);
    assert.equal(cert.subject, "O=tlsnet\nCN=Some Service");
    assert.equal(cert.subjectAltName, "DNS:a.test");
    const from = new Date(cert.validFrom);
    assertNear(from, new Date(start - HOUR));
    assertNear(new Date(cert.validTo), new Date(from.getTime() + 825 * DAY));
  });

  it("has the leaf extensions and openssl verifies it as sslserver", needsOpenssl, async () => {
    const leaf = await ca.issue({ names: ["localhost", "127.0.0.1"] });
    const text = await opensslText(leaf.cert);
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE\n/);
    assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature\n/);
    assert.match(text, /X509v3 Extended Key Usage:\s+TLS Web Server Authentication\n/);
    assert.doesNotMatch(text, /TLS Web Client Authentication/);
    assert.match(
      text,
      /X509v3 Subject Alternative Name:\s+DNS:localhost, IP Address:127\.0\.0\.1\n/,
    );
    assert.match(text, /X509v3 Authority Key Identifier:/);
    assert.match(text, /X509v3 Subject Key Identifier:/);

    const caFile = await pemFile(ca.cert);
    const leafFile = await pemFile(leaf.cert);
    const ok = await openssl(["verify", "-CAfile", caFile, "-purpose", "sslserver", leafFile]);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /: OK\n/);
    // Not a client certificate unless asked for.
    const client = await openssl(["verify", "-CAfile", caFile, "-purpose", "sslclient", leafFile]);
    assert.notEqual(client.code, 0, client.out);
    // And a different CA does not vouch for it.
    const otherFile = await pemFile((await createCA()).cert);
    const other = await openssl(["verify", "-CAfile", otherFile, leafFile]);
    assert.notEqual(other.code, 0, other.out);
  });

  it("client: true adds clientAuth next to serverAuth", needsOpenssl, async () => {
    const leaf = await ca.issue({ names: ["alice"], client: true });
    const text = await opensslText(leaf.cert);
    assert.match(
      text,
      /X509v3 Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication\n/,
    );
    const caFile = await pemFile(ca.cert);
    const leafFile = await pemFile(leaf.cert);
    for (const purpose of ["sslclient", "sslserver"]) {
      const res = await openssl(["verify", "-CAfile", caFile, "-purpose", purpose, leafFile]);
      assert.equal(res.code, 0, res.out);
    }
  });

  it("RSA leaves also get keyEncipherment", needsOpenssl, async () => {
    const leaf = await ca.issue({ names: ["localhost"], keyType: "rsa-2048" });
    assert.match(
      await opensslText(leaf.cert),
      /X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment\n/,
    );
  });

  it("makes expired certificates", async (t) => {
    const validFrom = new Date("2020-01-01T00:00:00Z");
    const leaf = await ca.issue({ names: ["localhost"], validFrom, validDays: 1 });
    const cert = x509(leaf.cert);
    assert.equal(new Date(cert.validFrom).toISOString(), "2020-01-01T00:00:00.000Z");
    assert.equal(new Date(cert.validTo).toISOString(), "2020-01-02T00:00:00.000Z");
    if (!HAVE_OPENSSL) {
      t.skip("openssl binary not found: the openssl half of this test did not run");
      return;
    }
    const res = await openssl([
      "verify",
      "-CAfile",
      await pemFile(ca.cert),
      await pemFile(leaf.cert),
    ]);
    assert.notEqual(res.code, 0);
    assert.match(res.out, /certificate has expired/);
  });

  it("makes not-yet-valid certificates", async (t) => {
    const validFrom = new Date(Math.ceil((Date.now() + 10 * DAY) / 1000) * 1000);
    const leaf = await ca.issue({ names: ["localhost"], validFrom, validDays: 0.5 });
    const cert = x509(leaf.cert);
    assert.equal(new Date(cert.validFrom).getTime(), validFrom.getTime());
    assert.equal(new Date(cert.validTo).getTime(), validFrom.getTime() + 12 * HOUR);
    if (!HAVE_OPENSSL) {
      t.skip("openssl binary not found: the openssl half of this test did not run");
      return;
    }
    const res = await openssl([
      "verify",
      "-CAfile",
      await pemFile(ca.cert),
      await pemFile(leaf.cert),
    ]);
    assert.notEqual(res.code, 0);
    assert.match(res.out, /certificate is not yet valid/);
  });

  it("encodes validity past 2049 (GeneralizedTime) correctly", async () => {
    const validFrom = new Date("2049-12-31T00:00:00Z");
    const cert = x509((await ca.issue({ names: ["x.test"], validFrom, validDays: 2 })).cert);
    assert.equal(new Date(cert.validTo).toISOString(), "2050-01-02T00:00:00.000Z");
  });
});

describe("intermediates", () => {
  let root: CA;
  before(async () => {
    root = await createCA({ name: "tlsnet test root" });
  });

  it("issues an intermediate CA with pathLen 0 that can issue leaves", async (t) => {
    const inter = await root.issue({ names: [], intermediate: true, keyType: "rsa-2048" });
    const interCert = x509(inter.cert);
    assert.equal(interCert.ca, true);
    assert.match(interCert.subject, /^O=tlsnet\nCN=tlsnet dev intermediate CA [0-9a-f]{12}$/);
    assert.equal(interCert.subjectAltName, undefined);
    assert.ok(interCert.checkIssued(x509(root.cert)));
    assert.equal(inter.chain, inter.cert);
    assert.equal(inter.ca.cert, inter.cert);
    assert.equal(inter.ca.key, inter.key);
    const leaf = await inter.ca.issue({ names: ["localhost"] });
    const leafCert = x509(leaf.cert);
    assert.equal(leafCert.issuer, interCert.subject);
    assert.ok(leafCert.checkIssued(interCert));
    assert.ok(leafCert.verify(interCert.publicKey));
    // cert is what a server sends: the leaf, then the intermediate; leaf is the leaf alone.
    assert.deepEqual(pemBlocks(leaf.cert), [leaf.leaf, inter.cert]);
    assert.equal(leaf.chain, leaf.cert);
    if (!HAVE_OPENSSL) {
      t.skip("openssl binary not found: the openssl half of this test did not run");
      return;
    }

    const text = await opensslText(inter.cert);
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0\n/);
    assert.match(text, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
    assert.doesNotMatch(text, /Extended Key Usage/);

    const rootFile = await pemFile(root.cert);
    const interFile = await pemFile(inter.cert);
    const leafFile = await pemFile(leaf.leaf);
    const ok = await openssl(["verify", "-CAfile", rootFile, "-untrusted", interFile, leafFile]);
    assert.equal(ok.code, 0, ok.out);
    const missing = await openssl(["verify", "-CAfile", rootFile, leafFile]);
    assert.notEqual(missing.code, 0, missing.out);
    assert.match(missing.out, /unable to get local issuer certificate/);
    // The served chain (leaf + intermediate) is exactly what -untrusted needs.
    const chainFile = await pemFile(leaf.chain);
    const viaChain = await openssl([
      "verify",
      "-CAfile",
      rootFile,
      "-untrusted",
      chainFile,
      leafFile,
    ]);
    assert.equal(viaChain.code, 0, viaChain.out);
  });

  it("an intermediate's names become SANs and the CN fallback, as for leaves", async () => {
    const named = await root.issue({ names: ["ca1.test"], intermediate: true });
    assert.match(x509(named.cert).subject, /CN=ca1\.test$/);
    assert.equal(x509(named.cert).subjectAltName, "DNS:ca1.test");
    const cn = await root.issue({ names: [], intermediate: true, commonName: "Issuing CA 2" });
    assert.match(x509(cn.cert).subject, /CN=Issuing CA 2$/);
    assert.equal(x509(cn.cert).subjectAltName, undefined);
  });

  it("refuses to issue an intermediate from an intermediate (pathLen 0)", async () => {
    const inter = await root.issue({ names: [], intermediate: true });
    await assert.rejects(inter.ca.issue({ names: [], intermediate: true }), RangeError);
  });
});

describe("loadCA", () => {
  for (const keyType of ["ec-p256", "rsa-2048", "ed25519"] as const) {
    it(`reloads a saved ${keyType} CA that issues verifiable leaves`, async () => {
      const original = await createCA({ keyType });
      const loaded = await loadCA({ cert: original.cert, key: original.key });
      assert.equal(loaded.cert, original.cert);
      const leaf = await loaded.issue({ names: ["localhost", "127.0.0.1"] });
      const x = new X509Certificate(leaf.cert);
      const root = new X509Certificate(original.cert);
      assert.ok(x.checkIssued(root));
      assert.ok(x.verify(root.publicKey));
      assert.equal(x.subjectAltName, "DNS:localhost, IP Address:127.0.0.1");
    });
  }

  it("refuses a key that is not the CA's, and a certificate that is not a CA", async () => {
    const a = await createCA();
    const b = await createCA();
    await assert.rejects(loadCA({ cert: a.cert, key: b.key }), /does not belong/);
    const leaf = await a.issue({ names: ["x.test"] });
    await assert.rejects(loadCA({ cert: leaf.cert, key: leaf.key }), /not a CA certificate/);
  });
});

describe("TLS handshakes over loopback", () => {
  for (const keyType of KEY_TYPES) {
    it(`${keyType}: a client trusting the CA connects to "localhost"`, async () => {
      const ca = await createCA({ keyType });
      const { cert, key } = await ca.issue({ names: ["localhost"], keyType });
      const res = await handshake({ cert, key }, { ca: [ca.cert], servername: "localhost" });
      assert.deepEqual(res, { ok: true, data: "hello" });
    });
  }

  it("rejects a certificate for another name, or from an untrusted CA", async () => {
    const ca = await createCA();
    const { cert, key } = await ca.issue({ names: ["other.test"] });
    const wrongName = await handshake({ cert, key }, { ca: [ca.cert], servername: "localhost" });
    assert.equal(wrongName.code, "ERR_TLS_CERT_ALTNAME_INVALID");
    const otherCA = await createCA();
    const untrusted = await handshake(
      { cert, key },
      { ca: [otherCA.cert], servername: "other.test" },
    );
    assert.equal(untrusted.code, "UNABLE_TO_VERIFY_LEAF_SIGNATURE");
  });

  it("an IP SAN matches a connection by IP address (no servername)", async () => {
    const ca = await createCA();
    const { cert, key } = await ca.issue({ names: ["127.0.0.1"] });
    assert.deepEqual(await handshake({ cert, key }, { ca: [ca.cert] }), {
      ok: true,
      data: "hello",
    });
    const dnsOnly = await ca.issue({ names: ["localhost"] });
    const res = await handshake({ cert: dnsOnly.cert, key: dnsOnly.key }, { ca: [ca.cert] });
    assert.equal(res.code, "ERR_TLS_CERT_ALTNAME_INVALID");
  });

  it("expired and not-yet-valid certificates are rejected", async () => {
    const ca = await createCA();
    const clientOpts = { ca: [ca.cert], servername: "localhost" };
    const expired = await ca.issue({
      names: ["localhost"],
      validFrom: new Date("2020-01-01T00:00:00Z"),
      validDays: 30,
    });
    const res = await handshake({ cert: expired.cert, key: expired.key }, clientOpts);
    assert.equal(res.code, "CERT_HAS_EXPIRED");
    const future = await ca.issue({ names: ["localhost"], validFrom: new Date(Date.now() + DAY) });
    const res2 = await handshake({ cert: future.cert, key: future.key }, clientOpts);
    assert.equal(res2.code, "CERT_NOT_YET_VALID");
  });

  it("a leaf from an intermediate works when the server sends the chain", async () => {
    const root = await createCA({ keyType: "ed25519" });
    const inter = await root.issue({ names: [], intermediate: true, keyType: "rsa-2048" });
    const leaf: IssuedCert = await inter.ca.issue({ names: ["localhost"] });
    const clientOpts = { ca: [root.cert], servername: "localhost" };
    const withChain = await handshake({ cert: leaf.chain, key: leaf.key }, clientOpts);
    assert.deepEqual(withChain, { ok: true, data: "hello" });
    // The natural pattern, { cert, key } of what issue() returned, serves the chain too.
    const natural = await handshake({ cert: leaf.cert, key: leaf.key }, clientOpts);
    assert.deepEqual(natural, { ok: true, data: "hello" });
    const leafOnly = await handshake({ cert: leaf.leaf, key: leaf.key }, clientOpts);
    assert.equal(leafOnly.code, "UNABLE_TO_VERIFY_LEAF_SIGNATURE");
  });

  it("mutual TLS with a client: true certificate", async () => {
    const ca = await createCA();
    const server = await ca.issue({ names: ["localhost"] });
    const client = await ca.issue({ names: ["alice"], client: true });
    const serverOpts = {
      cert: server.cert,
      key: server.key,
      ca: [ca.cert],
      requestCert: true,
      rejectUnauthorized: true,
    };
    const res = await handshake(serverOpts, {
      ca: [ca.cert],
      servername: "localhost",
      cert: client.cert,
      key: client.key,
    });
    assert.deepEqual(res, { ok: true, data: "hello" });

    // Without client: true the certificate is refused as a client certificate.
    const serverOnly = await ca.issue({ names: ["bob"] });
    const refused = await handshake(
      { ...serverOpts, rejectUnauthorized: false },
      { ca: [ca.cert], servername: "localhost", cert: serverOnly.cert, key: serverOnly.key },
    );
    assert.deepEqual(refused, { ok: true, data: "INVALID_PURPOSE" });
  });
});

describe("argument checking", () => {
  let ca: CA;
  before(async () => {
    ca = await createCA();
  });

  it("createCA rejects bad options", async () => {
    // biome-ignore lint/suspicious/noExplicitAny: deliberately wrong types
    const bad = (opts: any) => createCA(opts);
    await assert.rejects(bad({ keyType: "dsa" }), {
      name: "RangeError",
      message: /opts\.keyType must be one of "ec-p256", "rsa-2048", "ed25519"/,
    });
    await assert.rejects(bad({ validDays: 0 }), { name: "RangeError", message: /validDays/ });
    await assert.rejects(bad({ validDays: Number.NaN }), RangeError);
    await assert.rejects(bad({ validDays: "10" }), TypeError);
    await assert.rejects(bad({ name: "" }), { name: "RangeError", message: /opts\.name/ });
    await assert.rejects(bad({ name: 5 }), TypeError);
    await assert.rejects(bad(null), TypeError);
  });

  it("issue rejects bad options", async () => {
    // biome-ignore lint/suspicious/noExplicitAny: deliberately wrong types
    const bad = (opts: any) => ca.issue(opts);
    const cases: Array<[unknown, ErrorConstructor, RegExp]> = [
      [undefined, TypeError, /opts must be an object/],
      [{}, TypeError, /opts\.names/],
      [{ names: "localhost" }, TypeError, /opts\.names/],
      [{ names: [] }, RangeError, /opts\.names/],
      [{ names: [""] }, RangeError, /opts\.names\[0\]/],
      [{ names: ["a.test", 7] }, TypeError, /opts\.names\[1\]/],
      [{ names: ["bad name"] }, RangeError, /opts\.names\[0\]/],
      [{ names: ["bücher.test"] }, RangeError, /domainToASCII/],
      [{ names: ["fe80::1%eth0"] }, RangeError, /opts\.names\[0\]/],
      [{ names: ["a.test"], keyType: "ec-p384" }, RangeError, /"ec-p256", "rsa-2048", "ed25519"/],
      [{ names: ["a.test"], validDays: 0 }, RangeError, /opts\.validDays/],
      [{ names: ["a.test"], validDays: -1 }, RangeError, /opts\.validDays/],
      [{ names: ["a.test"], validDays: Number.POSITIVE_INFINITY }, RangeError, /opts\.validDays/],
      [{ names: ["a.test"], validDays: 5_000_000 }, RangeError, /opts\.validDays/],
      [{ names: ["a.test"], validFrom: new Date("nope") }, TypeError, /opts\.validFrom/],
      [{ names: ["a.test"], validFrom: "2020-01-01" }, TypeError, /opts\.validFrom/],
      [{ names: ["a.test"], client: "yes" }, TypeError, /opts\.client/],
      [{ names: ["a.test"], intermediate: 1 }, TypeError, /opts\.intermediate/],
      [{ names: ["a.test"], commonName: "" }, RangeError, /opts\.commonName/],
    ];
    for (const [opts, type, message] of cases) {
      await assert.rejects(bad(opts), (err: Error) => {
        assert.ok(err instanceof type, `${JSON.stringify(opts)}: got ${err}`);
        assert.match(err.message, message);
        return true;
      });
    }
  });
});
