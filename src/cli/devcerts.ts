/**
 * The CLI's persistent dev CA: created once per directory (the per-user data
 * dir by default), reused afterwards so a person trusts it once, and leaf
 * certificates issued from it for `serve` and `cert`.
 * @module
 */
import { randomBytes, X509Certificate } from "node:crypto";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { type CA, createCA, type IssueOptions, loadCA } from "../certs/index.ts";
import { splitSANs } from "../tls/state.ts";
import { CliError, ensureDir, fsError } from "./common.ts";

export { dataDir } from "./common.ts";

/** A CA whose files are on disk. */
export interface StoredCA {
  ca: CA;
  certFile: string;
  keyFile: string;
  /** True when this call generated it. */
  created: boolean;
}

/**
 * Open the CA in `dir`, creating it (and the dir) the first time or once it has expired. File
 * system failures are CliErrors ending with `fix` (which flag or variable picks another dir).
 */
export async function openCA(dir: string, fix: string): Promise<StoredCA> {
  await ensureDir(dir, fix);
  const certFile = join(dir, "ca.pem");
  const keyFile = join(dir, "ca-key.pem");
  return withLock(dir, fix, async () => {
    const existing = await readPair(certFile, keyFile);
    if (existing) {
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(existing.cert);
      } catch {
        throw new CliError(
          `cannot use the CA in ${dir}: ${certFile} is not a PEM certificate; remove ${certFile} and ${keyFile} to make a new CA, or ${fix}`,
        );
      }
      if (new Date(cert.validTo).getTime() > Date.now() + 86_400_000) {
        return {
          ca: await loadCA(existing).catch((e: Error) => {
            throw new CliError(`cannot use the CA in ${dir}: ${e.message}; ${fix}`);
          }),
          certFile,
          keyFile,
          created: false,
        };
      }
    }
    const ca = await createCA({ name: `tlsnet dev CA ${randomBytes(4).toString("hex")}` });
    await writeAtomic(keyFile, ca.key, 0o600, fix);
    await writeAtomic(certFile, ca.cert, 0o644, fix);
    return { ca, certFile, keyFile, created: true };
  });
}

/** A leaf written to disk. */
export interface StoredLeaf {
  certFile: string;
  keyFile: string;
  cert: X509Certificate;
  created: boolean;
}

/**
 * The leaf `base`.pem / `base`-key.pem in `dir` for `names`: reused when it
 * exists, is signed by this CA, covers the names and is valid for another day;
 * issued anew otherwise (or always, with `fresh`).
 */
export async function ensureLeaf(
  dir: string,
  stored: StoredCA,
  base: string,
  opts: Pick<IssueOptions, "names" | "client"> & { fresh?: boolean; fix: string },
): Promise<StoredLeaf> {
  const certFile = join(dir, `${base}.pem`);
  const keyFile = join(dir, `${base}-key.pem`);
  return withLock(dir, opts.fix, async () => {
    const existing = opts.fresh ? undefined : await readPair(certFile, keyFile);
    if (existing) {
      const cert = parse(existing.cert);
      if (cert && usable(cert, stored.ca.cert, opts.names)) {
        return { certFile, keyFile, cert, created: false };
      }
    }
    const leaf = await stored.ca.issue({ names: opts.names, client: opts.client ?? false });
    await writeAtomic(keyFile, leaf.key, 0o600, opts.fix);
    await writeAtomic(certFile, leaf.cert, 0o644, opts.fix);
    return { certFile, keyFile, cert: new X509Certificate(leaf.leaf), created: true };
  });
}

/** A file name for a certificate name: "*.example.test" → "_wildcard.example.test" (as mkcert does). */
export function fileBase(name: string): string {
  return name.replace(/^\*\./, "_wildcard.").replace(/[^A-Za-z0-9._-]/g, "_");
}

function parse(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined; // a damaged leaf is issued again
  }
}

function usable(cert: X509Certificate, caPem: string, names: readonly string[]): boolean {
  const ca = new X509Certificate(caPem);
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return false;
  if (new Date(cert.validTo).getTime() < Date.now() + 86_400_000) return false;
  if (new Date(cert.validFrom).getTime() > Date.now()) return false;
  const sans = splitSANs(cert.subjectAltName);
  return names.every((n) => (isIP(n) ? cert.checkIP(n) !== undefined : sans.includes(`DNS:${n}`)));
}

async function readPair(
  certFile: string,
  keyFile: string,
): Promise<{ cert: string; key: string } | undefined> {
  try {
    return { cert: await readFile(certFile, "utf8"), key: await readFile(keyFile, "utf8") };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CliError(`cannot read ${certFile}: ${(err as Error).message}`);
  }
}

/** Write via a temporary file and rename, so a reader never sees half a PEM. */
async function writeAtomic(path: string, text: string, mode: number, fix: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, text, { mode });
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw fsError(e, `write ${path}`, fix);
  }
}

/**
 * Run `fn` holding a lock on `dir` (a lock directory: mkdir is atomic), so two
 * tlsnet processes starting at once do not make two CAs. A lock older than
 * 30 s is taken to be left over from a crash.
 */
async function withLock<T>(dir: string, fix: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(dir, ".lock");
  const until = Date.now() + 15_000;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST")
        throw fsError(err, `create ${lock}`, fix);
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > 30_000) await rm(lock, { recursive: true, force: true });
      else if (Date.now() > until) {
        throw new CliError(
          `${dir} is locked by another tlsnet process; if none runs, remove ${lock}`,
        );
      } else await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}
