/**
 * Compiling the native engine's addon from the package's native/*.c with the
 * machine's C compiler: `npm run build:native` in a checkout (and `npm ci`'s
 * prepare script), `tlsnet build-native` in an installed package.
 *
 * No download: N-API headers come from the npm package node-api-headers when
 * it is installed (a dev dependency), else from the include/node directory of
 * the running Node (official builds and the npm `node` package ship it);
 * OpenSSL headers from the system (Debian libssl-dev), else from Node's
 * include/node/openssl. The addon is not linked to libssl: it uses the OpenSSL
 * of the Node process that loads it, whatever its 3.x version.
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, realpathSync, renameSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { defaultAddonPath, packageRoot } from "./addon.ts";

/** What {@link buildNative} takes. */
export interface BuildNativeOptions {
  /** AddressSanitizer + UBSan (npm run test:asan), into build/native-asan/. */
  asan?: boolean;
  /** The file to write; default build/native/tlsnet_native.node in the package. */
  out?: string;
  /** The C compiler; default $CC, else cc. */
  cc?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** Where the running Node's own headers may be: beside the real binary, or (npm's `node`
 * package, whose bin/node is a hard link) in its platform package. */
function nodeIncludeCandidates(): string[] {
  const bin = dirname(realpathSync(process.execPath));
  return [
    resolve(bin, "..", "include", "node"),
    resolve(
      bin,
      "..",
      "node_modules",
      `node-${process.platform}-${process.arch}`,
      "include",
      "node",
    ),
  ];
}

/** The running Node's own include/node (N-API and OpenSSL headers), if it ships one. */
export function nodeHeaders(): string | undefined {
  return nodeIncludeCandidates().find((dir) => existsSync(join(dir, "node_api.h")));
}

/** The N-API headers this build uses, or undefined when there are none. */
function napiHeaders(): string | undefined {
  try {
    const pkg = createRequire(import.meta.url).resolve("node-api-headers/package.json");
    const dir = join(dirname(pkg), "include");
    if (existsSync(join(dir, "node_api.h"))) return dir;
  } catch {
    // not installed (a user's project): the running Node's own headers
  }
  return nodeHeaders();
}

function napiInclude(): string {
  const dir = napiHeaders();
  if (dir) return dir;
  throw new Error(
    `no N-API headers: neither the dev dependency node-api-headers nor ${nodeIncludeCandidates()[0]} ` +
      "is there; use a Node installation that ships include/node (official builds do)",
  );
}

/**
 * Compile the addon; returns the path written. Throws an Error that says what is missing
 * (a compiler, headers) and how to get it.
 */
export function buildNative(opts: BuildNativeOptions = {}): string {
  const root = packageRoot();
  const log = opts.log ?? (() => {});
  const cc = opts.cc ?? process.env.CC ?? "cc";
  const out =
    opts.out ??
    (opts.asan ? join(root, "build", "native-asan", "tlsnet_native.node") : defaultAddonPath());
  const srcDir = join(root, "native");
  if (!existsSync(srcDir)) throw new Error(`the addon's sources are missing (${srcDir})`);
  const napi = napiInclude();
  // N-API headers after the system's, so that <openssl/...> is the system's (libssl-dev) when
  // present and Node's own copy (include/node/openssl) otherwise.
  const systemSSL = existsSync("/usr/include/openssl/ssl.h");
  if (!systemSSL && !existsSync(join(napi, "openssl", "ssl.h"))) {
    throw new Error("no OpenSSL 3 headers: install libssl-dev (Debian) or openssl-devel (Fedora)");
  }
  const sources = readdirSync(srcDir)
    .filter((f) => f.endsWith(".c"))
    .sort()
    .map((f) => join(srcDir, f));
  const tmp = `${out}.${process.pid}.tmp`;
  const flags = [
    "-std=gnu11",
    "-shared",
    "-fPIC",
    "-fvisibility=hidden",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-DOPENSSL_API_COMPAT=30000",
    "-DOPENSSL_NO_DEPRECATED",
    ...(opts.asan
      ? ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
      : ["-O2", "-g"]),
    "-idirafter",
    napi,
    "-o",
    tmp,
    ...sources,
    "-ldl", // dladdr/dlopen (in libc itself since glibc 2.34)
  ];
  mkdirSync(dirname(out), { recursive: true });
  log(
    `build:native: ${cc} (${sources.length} files), N-API headers ${napi}, OpenSSL headers ${
      systemSSL ? "/usr/include/openssl" : join(napi, "openssl")
    }${opts.asan ? ", ASan+UBSan" : ""}`,
  );
  const r = spawnSync(cc, flags, { stdio: ["ignore", "inherit", "inherit"] });
  if (r.error || r.status !== 0) {
    rmSync(tmp, { force: true });
    if (r.error) throw new Error(`cannot run ${cc}: ${r.error.message} (install build-essential)`);
    throw new Error(`${cc} failed with status ${r.status}`);
  }
  // A new file, renamed over the old: a process that has the old one loaded keeps its copy.
  renameSync(tmp, out);
  log(`build:native: wrote ${out}`);
  return out;
}
