/**
 * Client-side TLS session cache: the latest session (TLS 1.3 ticket or TLS 1.2
 * session) per server name, least recently used evicted first. Each session
 * keeps the identity verified on the full handshake that made it, because a
 * resumed handshake carries no certificates: a resumed conn reports the same
 * peer chain and verdict, as Go's does.
 * @module
 */
import type { Buffer } from "node:buffer";

/** The peer identity of the full handshake a session came from; filled once verified. */
export interface SessionIdentity {
  chain: Buffer[];
  verified: boolean;
}

export interface CachedSession {
  session: Buffer;
  identity: SessionIdentity;
}

/** A small LRU map: the one bounded cache used for sessions and for caches of them. */
export class LRU<K, V> {
  private readonly entries = new Map<K, V>();
  constructor(readonly size: number) {}

  get(key: K): V | undefined {
    const v = this.entries.get(key);
    if (v !== undefined) {
      this.entries.delete(key); // re-insert: most recently used last
      this.entries.set(key, v);
    }
    return v;
  }

  set(key: K, value: V): void {
    if (this.size <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, value);
    while (this.entries.size > this.size) {
      const oldest = this.entries.keys().next().value as K;
      this.entries.delete(oldest);
    }
  }

  delete(key: K): void {
    this.entries.delete(key);
  }
}

export class SessionCache extends LRU<string, CachedSession> {
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

  override set(key: string, value: CachedSession): void {
    this.ticketless.delete(key);
    super.set(key, value);
  }
}
