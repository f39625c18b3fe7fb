/**
 * Re-render the ratio chart from a saved run (every run writes bench/out/last.json).
 *
 *   node --import tsx bench/rechart.ts [REPORT.json] [OUT.svg]
 * @module
 */
import { readFileSync, writeFileSync } from "node:fs";
import { type Report, reportChart } from "./run.ts";

const [from = "bench/out/last.json", to = "bench/out/ratios.svg"] = process.argv.slice(2);
const report = JSON.parse(readFileSync(from, "utf8")) as Report;
writeFileSync(to, reportChart(report.rows, report.machine, report.quick));
console.log(`chart: ${to} (from ${from}, ${report.date})`);
