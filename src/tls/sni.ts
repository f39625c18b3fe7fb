/**
 * SNI: pick the certificate for a server name. Exact name beats wildcard
 * (`*.example.com` matches exactly one label), and no SNI or an unknown name
 * gets the first entry.
 * @module
 */
import type { Identity } from "./config.ts";

/** Index of the identity that serves `serverName` (0 when none claims it). */
export type SNISelector = (serverName: string | undefined) => number;

export function sniSelector(identities: readonly Identity[]): SNISelector {
  const exact = new Map<string, number>();
  const wildcard = new Map<string, number>();
  identities.forEach((id, i) => {
    for (const raw of id.names) {
      const name = normalize(raw); // a certificate may spell a name with a trailing dot too
      const table = name.startsWith("*.") ? wildcard : exact;
      const key = name.startsWith("*.") ? name.slice(2) : name;
      if (!table.has(key)) table.set(key, i); // earlier entries win ties
    }
  });
  return (serverName) => {
    if (!serverName) return 0;
    const name = normalize(serverName);
    const hit = exact.get(name);
    if (hit !== undefined) return hit;
    const dot = name.indexOf(".");
    if (dot > 0) {
      const w = wildcard.get(name.slice(dot + 1));
      if (w !== undefined) return w;
    }
    return 0;
  };
}

function normalize(name: string): string {
  return name.toLowerCase().replace(/\.$/, "");
}
