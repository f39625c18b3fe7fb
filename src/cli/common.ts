/**
 * What every command shares: flag parsing on node:util parseArgs, usage
 * errors (exit 2), colours, and small formatters.
 * @module
 */
import { readFileSync, realpathSync, statSync } from "node:fs";
import { access, constants, mkdir, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
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

/** A runtime failure already worded for the command line: main prints the message, exits 1. */
export class CliError extends Error {
  override name = "CliError";
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

/**
 * How to run this CLI where it runs now, for the commands it prints: `npm run -s tlsnet --` in a
 * checkout (run from source), `tlsnet` when the installed bin is on the PATH, else `npx tlsnet`.
 */
export function cliName(): string {
  const script = process.argv[1] ?? "";
  if (/\.[cm]?ts$/.test(script)) return "npm run -s tlsnet --";
  if (process.env.npm_command === "exec") return "npx tlsnet";
  let self: string;
  try {
    self = realpathSync(script);
  } catch {
    return "npx tlsnet";
  }
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    try {
      if (realpathSync(join(dir, "tlsnet")) !== self) continue;
    } catch {
      continue;
    }
    // A project's node_modules/.bin is on the PATH only inside npm scripts, not in a shell.
    return /node_modules[\\/]\.bin[\\/]?$/.test(dir) ? "npx tlsnet" : "tlsnet";
  }
  return "npx tlsnet";
}

/** What a file-system error code means, for "cannot create X: ..." messages. */
function fsReason(e: unknown, parent: string): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  switch (code) {
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EROFS":
      return "read-only file system";
    case "ENOSPC":
      return "no space left on the device";
    case "ENOTDIR":
      return `${parent} is not a directory`;
    case "ENOENT":
      return `${parent} does not allow new directories`;
    default:
      return (e as Error)?.message ?? String(e);
  }
}

/**
 * Make sure `dir` is a directory we can write in, creating what is missing one level at a time
 * (never `mkdir -p`, which spins on /proc in Node 20). Failures are CliErrors that end with `fix`,
 * e.g. "set TLSNET_HOME to a directory you can write to".
 */
export async function ensureDir(dir: string, fix: string): Promise<void> {
  const abs = resolve(dir);
  const missing: string[] = [];
  for (let p = abs; ; p = dirname(p)) {
    let isDir: boolean;
    try {
      isDir = (await stat(p)).isDirectory();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT" && dirname(p) !== p) {
        missing.unshift(p);
        continue;
      }
      if (code === "ENOTDIR") continue; // a file further up: found when stat reaches it
      throw new CliError(`cannot use ${abs}: ${fsReason(e, dirname(p))}; ${fix}`);
    }
    if (!isDir) {
      throw new CliError(
        p === abs
          ? `cannot use ${abs} as a directory: it is a file; ${fix}`
          : `cannot create ${abs}: ${p} is a file, not a directory; ${fix}`,
      );
    }
    break;
  }
  for (const p of missing) {
    try {
      await mkdir(p, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST" && statSync(p).isDirectory()) continue;
      throw new CliError(`cannot create ${p}: ${fsReason(e, dirname(p))}; ${fix}`);
    }
  }
  try {
    await access(abs, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw new CliError(`cannot write in ${abs}: ${fsReason(e, abs)}; ${fix}`);
  }
}

/** A failed write or mkdir inside a directory ensureDir accepted, as a CliError ending with `fix`. */
export function fsError(e: unknown, what: string, fix: string): CliError {
  return new CliError(`cannot ${what}: ${fsReason(e, "the directory")}; ${fix}`);
}
