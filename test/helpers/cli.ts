/**
 * Running the `tlsnet` command line as child processes for the CLI tests:
 * `node --import tsx src/cli/main.ts ...` from the checkout, with TLSNET_HOME
 * in a temporary directory and NO_COLOR set. Every child started here is
 * killed when the test file ends (and by the test's own t.after when given).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { after, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { createCA } from "../../src/certs/index.ts";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const WORK = mkdtempSync(join(tmpdir(), "tlsnet-cli-"));
export const HOME = join(WORK, "home");
const children = new Set<ChildProcess>();

after(() => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(WORK, { recursive: true, force: true });
});

export interface Proc {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolve with the first match of `re` in stdout (or stderr); reject on exit or after `ms`. */
  waitFor: (re: RegExp, ms?: number, stream?: "stdout" | "stderr") => Promise<RegExpMatchArray>;
}

export interface StartOptions {
  /** Written to stdin, which is then closed; without it stdin stays open. */
  input?: string;
  env?: Record<string, string | undefined>;
  /** Killed in this test's t.after. */
  t?: TestContext;
  /** The program and its leading arguments instead of the CLI (e.g. ["npm", "start", "--"]). */
  command?: string[];
  /** SIGKILL after this many ms (a hard limit for a case that could hang). */
  killAfter?: number;
}

/** Start `tlsnet ...args`. */
export function start(args: string[], opts: StartOptions = {}): Proc {
  const [bin, ...pre] = opts.command ?? [process.execPath, "--import", "tsx", "src/cli/main.ts"];
  const env: Record<string, string | undefined> = {
    ...process.env,
    TLSNET_HOME: HOME,
    NO_COLOR: "1",
    TLSNET_DEBUG: undefined,
    ...opts.env,
  };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const child = spawn(bin!, [...pre, ...args], {
    cwd: ROOT,
    env: env as NodeJS.ProcessEnv,
    stdio: ["pipe", "pipe", "pipe"],
  });
  children.add(child);
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  opts.t?.after(kill);
  const hard = opts.killAfter ? setTimeout(kill, opts.killAfter) : undefined;
  const text = { stdout: "", stderr: "" };
  const listeners = new Set<() => void>();
  for (const name of ["stdout", "stderr"] as const) {
    child[name]!.on("data", (b: Buffer) => {
      text[name] += b.toString();
      for (const l of listeners) l();
    });
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("close", (code, signal) => {
      clearTimeout(hard);
      children.delete(child);
      for (const l of listeners) l();
      resolve({ code, signal });
    }),
  );
  child.stdin!.on("error", () => {}); // a child that exits early closes its stdin
  if (opts.input !== undefined) child.stdin!.end(opts.input);
  const waitFor = (re: RegExp, ms = 15_000, stream: "stdout" | "stderr" = "stdout") =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const m = re.exec(text[stream]);
        if (m) return done(() => resolve(m));
        if (child.exitCode !== null || child.signalCode !== null) {
          done(() =>
            reject(new Error(`${args[0]} exited before ${re}:\n${text.stdout}\n${text.stderr}`)),
          );
        }
      };
      const timer = setTimeout(
        () =>
          done(() =>
            reject(new Error(`no ${re} within ${ms} ms:\n${text.stdout}\n${text.stderr}`)),
          ),
        ms,
      );
      const done = (fn: () => void) => {
        clearTimeout(timer);
        listeners.delete(check);
        fn();
      };
      listeners.add(check);
      check();
    });
  return { child, stdout: () => text.stdout, stderr: () => text.stderr, exited, waitFor };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run `tlsnet ...args` to the end; stdin gets `input` (empty by default) and is closed. */
export async function run(args: string[], opts: StartOptions = {}): Promise<RunResult> {
  const p = start(args, { input: "", killAfter: 60_000, ...opts });
  const { code, signal } = await p.exited;
  return { code, signal, stdout: p.stdout(), stderr: p.stderr() };
}

/** Start `tlsnet serve --addr 127.0.0.1:0 ...args` and wait for its port. */
export async function serve(
  args: string[] = [],
  opts: StartOptions = {},
): Promise<Proc & { port: number }> {
  const p = start(["serve", "--addr", "127.0.0.1:0", ...args], opts);
  const m = await p.waitFor(/listening on https:\/\/127\.0\.0\.1:(\d+)/);
  return { ...p, port: Number(m[1]) };
}

export function stop(p: Proc): void {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
}

/** Whether `bin` is an executable on the PATH. */
export function which(bin: string): boolean {
  return (process.env.PATH ?? "").split(delimiter).some((d) => {
    try {
      accessSync(join(d, bin), constants.X_OK);
      return d !== "";
    } catch {
      return false;
    }
  });
}

/** A port nothing listens on: bind port 0, note it, close. */
export async function deadPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

/** A CA and leaf written to files in a fresh directory. */
export async function certFiles(
  names: string[],
  opts: { validFrom?: Date; validDays?: number; client?: boolean } = {},
) {
  const dir = mkdtempSync(join(WORK, "pki-"));
  const ca = await createCA();
  const leaf = await ca.issue({ names, ...opts });
  const files = {
    dir,
    ca: join(dir, "ca.pem"),
    cert: join(dir, "cert.pem"),
    key: join(dir, "key.pem"),
  };
  writeFileSync(files.ca, ca.cert);
  writeFileSync(files.cert, leaf.cert);
  writeFileSync(files.key, leaf.key, { mode: 0o600 });
  return { ...files, ca_: ca };
}

/** A regexp source for a literal string. */
export function literal(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
