/**
 * Which TLS engine a config runs on: `engine` in the options, else the
 * TLSNET_ENGINE environment variable, else the default: "native" where the
 * addon is built, loads into this Node and passes its self-check, "node"
 * otherwise. Asking for "native" explicitly where the addon is not available is
 * a ConfigError before any I/O: never a silent fallback.
 * @module
 */
import { ConfigError } from "../../errors.ts";
import { loadAddon } from "./addon.ts";

/** A TLS engine: "native" (tlsnet's OpenSSL addon, `npm run build:native`; the default where it loads) or "node" (node:tls). */
export type EngineName = "node" | "native";

const ENGINES: readonly EngineName[] = ["node", "native"];

/** The engine for a config: validated and available. */
export function resolveEngine(option: unknown): EngineName {
  const fromEnv = option === undefined;
  const engine = fromEnv ? envEngine() : option;
  if (engine === undefined) return loadAddon().addon ? "native" : "node";
  if (!ENGINES.includes(engine as EngineName)) {
    throw new ConfigError(`engine must be "node" or "native", got ${JSON.stringify(engine)}`, {
      field: "engine",
    });
  }
  if (engine === "node") return "node";
  const where = fromEnv ? "TLSNET_ENGINE=native" : 'engine "native"';
  const status = loadAddon();
  if (!status.addon) {
    throw new ConfigError(
      `${where}: the native TLS engine is not available: ${status.why}; ` +
        `build it with npm run build:native, or use engine "node"`,
      { field: "engine" },
    );
  }
  return "native";
}

/** The engine named by TLSNET_ENGINE, or undefined; a bad value is a ConfigError. */
function envEngine(): EngineName | undefined {
  const v = process.env.TLSNET_ENGINE;
  if (v === undefined || v === "") return undefined;
  if (v === "node" || v === "native") return v;
  throw new ConfigError(`TLSNET_ENGINE must be "node" or "native", got ${JSON.stringify(v)}`, {
    field: "engine",
  });
}

/** The engine a config without `engine` gets here, and why (for tls.backend() and tlsnet info). */
export function defaultEngine(): { engine: EngineName; why: string } {
  const v = process.env.TLSNET_ENGINE;
  const native = loadAddon();
  if (v === "native") {
    return native.addon
      ? { engine: "native", why: "TLSNET_ENGINE=native" }
      : { engine: "node", why: `TLSNET_ENGINE=native, but ${native.why}` };
  }
  if (v === "node") return { engine: "node", why: "TLSNET_ENGINE=node" };
  return native.addon
    ? {
        engine: "native",
        why: `the default: the addon loads and its self-check passed (${native.check}); TLSNET_ENGINE=node or engine "node" selects node:tls`,
      }
    : {
        engine: "node",
        why: `the default, since the native engine is not available: ${native.why}`,
      };
}
