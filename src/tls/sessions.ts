/**
 * Client-side TLS session cache: the latest session (TLS 1.3 ticket or TLS 1.2
 * session) per server name and port, least recently used evicted first.
 * @module
 */
export class SessionCache {
  private readonly entries = new Map<string, Buffer>();
  constructor(readonly size: number) {}

  get(key: string): Buffer | undefined {
    const s = this.entries.get(key);
    if (s !== undefined) {
      this.entries.delete(key); // re-insert: most recently used last
      this.entries.set(key, s);
    }
    return s;
  }

  set(key: string, session: Buffer): void {
    if (this.size <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, session);
    while (this.entries.size > this.size) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
  }
}
