/**
 * What every command shares: flag parsing on node:util parseArgs, usage
 * errors (exit 2), colours, and small formatters.
 * @module
 */
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

/** One `tlsnet` subcommand. `run` returns the exit code. */
export interface Command {
  /** One line: `tlsnet connect HOST:PORT [--ca F] ...`. */
  usage: string;
  /** The full `--help` text, with an example. */
  help: string;
  run(argv: string[]): Promise<number>;
}

/** Wrong flags or arguments: main prints the message and the usage line, exits 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

type OptionSpec = Record<
  string,
  { type: "string" | "boolean"; short?: string; multiple?: boolean; default?: string | boolean }
>;

type FlagValue<O> = O extends { type: "boolean" }
  ? O extends { multiple: true }
    ? boolean[]
    : boolean
  : O extends { multiple: true }
    ? string[]
    : string;

/** Parsed flags: those with a default are always set, the others may be missing. */
export type Flags<T extends OptionSpec> = {
  -readonly [K in keyof T as T[K] extends { default: unknown } ? K : never]: FlagValue<T[K]>;
} & {
  -readonly [K in keyof T as T[K] extends { default: unknown } ? never : K]?: FlagValue<T[K]>;
} & { help?: boolean };

/** parseArgs in strict mode, with `--help/-h` added and its errors turned into UsageErrors. */
export function parseFlags<T extends OptionSpec>(
  argv: string[],
  options: T,
): { values: Flags<T>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
    return { values: values as unknown as Flags<T>, positionals };
  } catch (err) {
    // parseArgs explains "--" escaping at length; the first sentence is what a person needs.
    const msg = err instanceof Error ? err.message : String(err);
    const first = msg.split(/\.\s/)[0]!.replace(/\.$/, "");
    throw new UsageError(first.charAt(0).toLowerCase() + first.slice(1));
  }
}

/** A flag that must be a whole number within [min, max]. */
export function intFlag(
  value: string | undefined,
  name: string,
  fallback: number,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) {
    throw new UsageError(`--${name} takes a whole number from ${min} to ${max}, got '${value}'`);
  }
  return n;
}

/** A comma-separated list flag: "h2,http/1.1" → ["h2", "http/1.1"]. */
export function listFlag(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const list = value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  return list.length > 0 ? list : undefined;
}

/** ANSI styles for one stream: on only for a terminal and when NO_COLOR is unset. */
export function paint(stream: NodeJS.WriteStream) {
  const on = stream.isTTY === true && !process.env.NO_COLOR;
  const sgr = (open: number, close: number) => (s: string) =>
    on ? `\x1b[${open}m${s}\x1b[${close}m` : s;
  return {
    on,
    bold: sgr(1, 22),
    dim: sgr(2, 22),
    red: sgr(31, 39),
    green: sgr(32, 39),
    yellow: sgr(33, 39),
    cyan: sgr(36, 39),
  };
}

/** Print to stdout / stderr, one line. */
export const out = (line = ""): void => void process.stdout.write(`${line}\n`);
export const err = (line = ""): void => void process.stderr.write(`${line}\n`);

/** Milliseconds with one decimal below 100 ms, whole above. */
export function ms(n: number): string {
  return n < 100 ? `${n.toFixed(1)} ms` : `${Math.round(n)} ms`;
}

/** "2026-05-01" */
export function day(d: Date): string {
  return d.toISOString().slice(0, 10);
}

/** Bytes for people: 512 B, 1.5 KiB, 3.2 MiB. */
export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Whole days from now until `d` (negative once past). */
export function daysLeft(d: Date): number {
  return Math.floor((d.getTime() - Date.now()) / 86_400_000);
}

/** The package version, read from package.json two levels up (src/cli or dist/cli). */
export function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
    return String(pkg.version);
  } catch {
    return "unknown";
  }
}

/** Wait until everything written to stdout has been handed to the OS. */
export function flushStdout(): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdout.destroyed) resolve();
    else process.stdout.write("", () => resolve());
  });
}

/** Where the CLI keeps its dev CA: $TLSNET_HOME, else $XDG_DATA_HOME/tlsnet, else ~/.local/share/tlsnet. */
export function dataDir(): string {
  const env = process.env;
  if (env.TLSNET_HOME) return env.TLSNET_HOME;
  if (env.XDG_DATA_HOME) return join(env.XDG_DATA_HOME, "tlsnet");
  return join(homedir(), ".local", "share", "tlsnet");
}

/** Library option names in a message, as this CLI's flags: "caFile: cannot read" → "--ca: cannot read". */
export function flagNames(message: string): string {
  const flags: Record<string, string> = {
    clientCaFile: "--client-ca",
    caFile: "--ca",
    certFile: "--cert",
    keyFile: "--key",
    alpnProtocols: "--alpn",
    serverName: "--servername",
  };
  return message
    .replace(/\bca\/caFile\b/g, "--ca")
    .replace(/certFile\/keyFile\.cert\b/g, "--cert")
    .replace(/certFile\/keyFile\.key\b/g, "--key")
    .replace(/certFile\/keyFile\b/g, "--cert/--key")
    .replace(
      /\b(clientCaFile|caFile|certFile|keyFile|alpnProtocols|serverName)\b/g,
      (m) => flags[m]!,
    );
}
