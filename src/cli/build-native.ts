/**
 * `tlsnet build-native`: compile the native TLS engine for this Node from the
 * package's own sources (no download), then load it and run its self-check.
 * From then on configs that name no engine run on it.
 * @module
 */
import { loadFrom } from "../tls/engine/addon.ts";
import { buildNative } from "../tls/engine/build.ts";
import { type Command, err, out, parseFlags, UsageError } from "./common.ts";

const usage = "tlsnet build-native [--out FILE]";

const help = `${usage}

Compile tlsnet's native TLS engine (an N-API addon that runs the OpenSSL of
the Node process on the socket itself) from the sources in the package, with
the machine's C compiler ($CC, else cc), the running Node's N-API headers and
OpenSSL 3 headers (Debian: apt-get install build-essential libssl-dev). Nothing
is downloaded. Then load it and run its self-check (a TLS 1.3 handshake in
memory). Without it, tlsnet runs on node:tls; 'tlsnet info' says which.

Options:
  --out FILE   write the addon there (then set TLSNET_NATIVE_ADDON=FILE)
               instead of the package's build/native/tlsnet_native.node
  -h, --help   this help

Example:
  npx tlsnet build-native && npx tlsnet info`;

export const command: Command = { usage, help, run };

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { out: { type: "string" } });
  if (values.help) {
    out(help);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  let path: string;
  try {
    path = buildNative({ ...(values.out ? { out: values.out } : {}), log: (line) => err(line) });
  } catch (e) {
    err(`tlsnet build-native: ${(e as Error).message}`);
    return 1;
  }
  const loaded = loadFrom(path);
  if (!loaded.addon) {
    err(`tlsnet build-native: built ${path}, but it does not load: ${loaded.why}`);
    return 1;
  }
  out(`native engine ready: ${path} (self-check: ${loaded.check})`);
  if (values.out) out(`select it with TLSNET_NATIVE_ADDON=${path}`);
  return 0;
}
