/** tls.config validation: every rule of the contract is a ConfigError naming the field, before any I/O. */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ConfigError, type TLSOptions, tls } from "../src/index.ts";
import { pki } from "./helpers/tls.ts";

function rejects(opts: TLSOptions, field: RegExp, message: RegExp): void {
  let err: unknown;
  try {
    tls.config(opts);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
  assert.equal(err.code, "ERR_TLSNET_CONFIG");
  assert.match(err.field ?? "", field);
  assert.match(err.message, message);
}

describe("tls.config validation", () => {
  let dir = "";
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "tlsnet-config-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("cert without key, and key without cert", async () => {
    const { leaf } = await pki();
    rejects({ certs: [{ cert: leaf.cert } as never] }, /certs\[0\]\.key/, /cert given without key/);
    rejects({ certs: [{ key: leaf.key } as never] }, /certs\[0\]\.cert/, /key given without cert/);
    rejects({ certFile: "x.pem" }, /keyFile/, /keyFile is missing/);
    rejects({ keyFile: "x.pem" }, /certFile/, /certFile is missing/);
  });

  test("a cert/key pair that does not match", async () => {
    const { ca, leaf } = await pki();
    const other = await ca.issue({ names: ["other.test"] });
    rejects(
      { certs: [leaf, { cert: leaf.cert, key: other.key }] },
      /certs\[1\]\.key/,
      /does not match the certificate/,
    );
  });

  test("unreadable and non-PEM files", async () => {
    const { leaf } = await pki();
    const keyPath = join(dir, "key.pem");
    await writeFile(keyPath, leaf.key);
    rejects({ certFile: join(dir, "missing.pem"), keyFile: keyPath }, /certFile/, /no such file/);
    const junk = join(dir, "junk.pem");
    await writeFile(junk, "not a certificate at all");
    rejects({ certFile: junk, keyFile: keyPath }, /cert/, /not PEM/);
    rejects({ caFile: junk }, /caFile/, /not PEM/);
    rejects({ ca: "garbage" }, /^ca$/, /not PEM/);
  });

  test("a server without certs", async () => {
    await assert.rejects(tls.listen({ addr: "127.0.0.1:0" }), (e) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.field, "certs");
      assert.match(e.message, /needs a certificate/);
      return true;
    });
  });

  test("min above max, and versions below TLS 1.2", () => {
    rejects({ minVersion: "TLSv1.3", maxVersion: "TLSv1.2" }, /minVersion/, /above maxVersion/);
    rejects({ minVersion: "TLSv1.1" as never }, /minVersion/, /insecure/);
    rejects({ maxVersion: "TLSv1" as never }, /maxVersion/, /insecure/);
  });

  test("a verifying clientAuth mode without clientCa", () => {
    rejects({ clientAuth: "require-and-verify" }, /clientCa/, /needs clientCa/);
    rejects({ clientAuth: "verify-if-given" }, /clientCa/, /needs clientCa/);
    rejects({ clientAuth: "sometimes" as never }, /clientAuth/, /must be one of/);
    tls.config({ clientAuth: "require-any" }); // does not verify, so no CA needed
  });

  test("negative timeouts", () => {
    rejects({ handshakeTimeout: -1 }, /handshakeTimeout/, />= 0/);
  });

  test("ALPN names empty or over 255 bytes", () => {
    rejects({ alpnProtocols: [""] }, /alpnProtocols\[0\]/, /1\.\.255 bytes/);
    rejects({ alpnProtocols: ["h2", "x".repeat(256)] }, /alpnProtocols\[1\]/, /1\.\.255 bytes/);
    rejects({ alpnProtocols: "h2" as never }, /alpnProtocols/, /array/);
  });

  test("ticketKeys not 48 bytes", () => {
    rejects({ ticketKeys: Buffer.alloc(32) }, /ticketKeys/, /48 bytes.*got 32 bytes/);
  });

  test("a cipher list OpenSSL rejects", () => {
    rejects({ ciphers: "NOT-A-CIPHER" }, /ciphers/, /invalid ciphers/);
  });

  test("the config is frozen and reusable", async () => {
    const { leaf } = await pki();
    const cfg = tls.config({ certs: [leaf], alpnProtocols: ["h2"] });
    assert.ok(Object.isFrozen(cfg));
    assert.throws(() => {
      (cfg as { verifyPeer: boolean }).verifyPeer = false;
    }, TypeError);
    assert.ok(Object.isFrozen(cfg.alpnProtocols));
    assert.equal(tls.config(cfg), cfg);
    assert.equal(cfg.serverContexts(), cfg.serverContexts(), "contexts built once");
  });

  test("tls.connect validates options before dialing", async () => {
    // Port 9 on 127.0.0.1 is not listening; a ConfigError proves nothing was dialed.
    await assert.rejects(tls.connect("127.0.0.1:9", { minVersion: "TLSv1" as never }), ConfigError);
    await assert.rejects(tls.connect("127.0.0.1:9", { timeout: -5 }), ConfigError);
  });
});
