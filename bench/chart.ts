/**
 * A small hand-written SVG bar chart of the tlsnet/node ratios.
 * @module
 */

export interface Bar {
  label: string;
  ratio: number;
  /** For memory: a smaller ratio is better. */
  lowerIsBetter?: boolean;
  /** A fixed bar colour (peers in the servers chart); else green/orange against 0.95. */
  color?: string;
  /** Bars of one group stand together; a gap and a rule separate groups. */
  group?: string;
}

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** Horizontal bars, one per workload, with reference lines at 0.95 and 1.0. */
export function ratioChart(bars: readonly Bar[], title: string, subtitle: string): string {
  const labels = bars.map((b) => (b.lowerIsBetter ? `${b.label} (lower is better)` : b.label));
  // ~7 px per character at 13 px: room for the longest label.
  const labelW = Math.max(200, Math.ceil(Math.max(0, ...labels.map((l) => l.length)) * 7) + 16);
  const plotW = 420;
  const rowH = 26;
  const top = 72;
  const bottom = 40;
  const groupGap = 12;
  const width = labelW + plotW + 70;
  // Row tops, with a gap wherever the group changes.
  const rowY: number[] = [];
  let yy = top;
  bars.forEach((b, i) => {
    if (i > 0 && b.group !== bars[i - 1]!.group) yy += groupGap;
    rowY.push(yy);
    yy += rowH;
  });
  const height = yy + bottom;
  const finite = bars.map((b) => b.ratio).filter((r) => Number.isFinite(r));
  const maxR = Math.max(1.2, ...finite.map((r) => r * 1.05));
  const x = (r: number) => labelW + (Math.max(0, r) / maxR) * plotW;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="13">`,
    `<title>${esc(title)}: ${esc(subtitle)}</title>`, // alternative text for screen readers
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="12" y="24" font-size="16" font-weight="600" fill="#111">${esc(title)}</text>`,
    `<text x="12" y="44" fill="#555">${esc(subtitle)}</text>`,
  );
  // grid
  for (let t = 0; t <= maxR + 1e-9; t += 0.25) {
    const gx = x(t).toFixed(1);
    parts.push(
      `<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${height - bottom + 4}" stroke="#eee"/>`,
      `<text x="${gx}" y="${height - bottom + 20}" text-anchor="middle" fill="#777" font-size="11">${t.toFixed(2)}</text>`,
    );
  }
  bars.forEach((b, i) => {
    const y = rowY[i]!;
    if (i > 0 && b.group !== bars[i - 1]!.group) {
      const ly = (y - groupGap / 2).toFixed(1);
      parts.push(`<line x1="12" y1="${ly}" x2="${width - 12}" y2="${ly}" stroke="#ccc"/>`);
    }
    const ok = Number.isFinite(b.ratio) && (b.lowerIsBetter ? b.ratio <= 1.05 : b.ratio >= 0.95);
    const color = !Number.isFinite(b.ratio) ? "#bbb" : (b.color ?? (ok ? "#2e7d32" : "#e65100"));
    const w = Number.isFinite(b.ratio) ? Math.max(1, x(b.ratio) - labelW) : 0;
    const label = labels[i]!;
    parts.push(
      `<text x="${labelW - 8}" y="${y + 17}" text-anchor="end" fill="#222">${esc(label)}</text>`,
      `<rect x="${labelW}" y="${y + 5}" width="${w.toFixed(1)}" height="${rowH - 10}" fill="${color}" rx="2"/>`,
      `<text x="${(labelW + w + 6).toFixed(1)}" y="${y + 17}" fill="#222" stroke="#fff" stroke-width="3" paint-order="stroke">${
        Number.isFinite(b.ratio) ? b.ratio.toFixed(2) : "n/a"
      }</text>`,
    );
  });
  const ref = (r: number, dash: string, text: string, anchor: "end" | "start") => {
    const rx = x(r);
    const tx = (anchor === "end" ? rx - 2 : rx + 2).toFixed(1);
    parts.push(
      `<line x1="${rx.toFixed(1)}" y1="${top - 6}" x2="${rx.toFixed(1)}" y2="${height - bottom + 4}" stroke="#333" stroke-width="1" ${dash}/>`,
      `<text x="${tx}" y="${top - 10}" text-anchor="${anchor}" fill="#333" font-size="11">${text}</text>`,
    );
  };
  ref(0.95, 'stroke-dasharray="4 3"', "0.95", "end");
  ref(1, "", "1.00", "start");
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}
