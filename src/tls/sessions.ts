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

  /** Servers that sent no ticket when we last waited for one: close() does not wait again. */
  private readonly ticketless = new Set<string>();

  /** Should close() wait briefly for a ticket from this server? */
  expectsTicket(key: string): boolean {
    return this.size > 0 && !this.ticketless.has(key);
  }

  noTicketFrom(key: string): void {
    if (this.ticketless.size >= this.size) this.ticketless.clear(); // bounded like the cache
    this.ticketless.add(key);
  }

  set(key: string, session: Buffer): void {
    this.ticketless.delete(key);
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
