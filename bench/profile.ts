/**
 * Summarise V8 .cpuprofile files (from `node --cpu-prof`): the functions with
 * the most self time, and self time grouped by file.
 *
 *   node --import tsx bench/profile.ts FILE.cpuprofile [--top 25]
 * @module
 */
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileEntry {
  name: string;
  where: string;
  selfMs: number;
  share: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** Share of samples outside idle (program, GC and JS/native work). */
  busyShare: number;
  top: ProfileEntry[];
  byFile: ProfileEntry[];
}

function shortUrl(url: string): string {
  if (url === "") return "(native)";
  const u = url.replace(/^file:\/\//, "");
  const i = u.indexOf("/src/");
  if (i >= 0 && !u.includes("node_modules")) return u.slice(i + 1);
  const b = u.indexOf("/bench/");
  if (b >= 0) return u.slice(b + 1);
  return u.replace(/^.*node_modules\//, "node_modules/");
}

/** Self time per function (by name + location) and per file. */
export function summarise(file: string, topN = 25): ProfileSummary {
  const prof = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of prof.nodes) byId.set(n.id, n);
  const self = new Map<number, number>();
  const samples = prof.samples ?? [];
  const deltas = prof.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    // timeDeltas[i] is the time before sample i; attribute the next delta to sample i.
    const dt = (deltas[i + 1] ?? deltas[i] ?? 0) / 1000;
    const id = samples[i]!;
    self.set(id, (self.get(id) ?? 0) + dt);
  }
  const fn = new Map<string, ProfileEntry>();
  const files = new Map<string, ProfileEntry>();
  let total = 0;
  let idle = 0;
  for (const [id, ms] of self) {
    const node = byId.get(id);
    if (!node) continue;
    total += ms;
    const cf = node.callFrame;
    const name = cf.functionName || "(anonymous)";
    if (name === "(idle)") idle += ms;
    const where = cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : "(native)";
    const key = `${name}@${where}`;
    const e = fn.get(key) ?? { name, where, selfMs: 0, share: 0 };
    e.selfMs += ms;
    fn.set(key, e);
    const fk = cf.url ? shortUrl(cf.url) : name.startsWith("(") ? name : "(native)";
    const f = files.get(fk) ?? { name: fk, where: "", selfMs: 0, share: 0 };
    f.selfMs += ms;
    files.set(fk, f);
  }
  const busy = total - idle;
  const finish = (m: Map<string, ProfileEntry>) =>
    [...m.values()]
      .map((e) => ({ ...e, share: total > 0 ? e.selfMs / total : 0 }))
      .sort((a, b) => b.selfMs - a.selfMs)
      .slice(0, topN);
  return {
    totalMs: total,
    busyShare: total > 0 ? busy / total : 0,
    top: finish(fn),
    byFile: finish(files),
  };
}

export function formatSummary(file: string, s: ProfileSummary): string {
  const lines = [
    `${file}: ${s.totalMs.toFixed(0)} ms sampled, ${(s.busyShare * 100).toFixed(1)}% not idle`,
    "  self ms   share  function (location)",
  ];
  for (const e of s.top) {
    lines.push(
      `  ${e.selfMs.toFixed(1).padStart(7)}  ${(e.share * 100).toFixed(1).padStart(5)}%  ${e.name} (${e.where})`,
    );
  }
  lines.push("  by file:");
  for (const e of s.byFile.slice(0, 12)) {
    lines.push(
      `  ${e.selfMs.toFixed(1).padStart(7)}  ${(e.share * 100).toFixed(1).padStart(5)}%  ${e.name}`,
    );
  }
  return lines.join("\n");
}

const entry = process.argv[1];
if (entry && import.meta.url === pathToFileURL(entry).href) {
  const args = process.argv.slice(2);
  const ti = args.indexOf("--top");
  const top = ti >= 0 ? Number(args[ti + 1]) : 25;
  const files = args.filter((a, i) => !a.startsWith("--") && (ti < 0 || i !== ti + 1));
  if (files.length === 0) {
    console.error("usage: node --import tsx bench/profile.ts FILE.cpuprofile... [--top N]");
    process.exitCode = 2;
  }
  for (const f of files) console.log(formatSummary(f, summarise(f, top)));
}
