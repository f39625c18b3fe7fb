/**
 * A one-line progress bar for a terminal: `█████░░░░░ 5/10 URLs | 1 failed | 3s left`, redrawn
 * at most ten times a second, with the cursor hidden while it runs and the line cleared at the
 * end. What `tlsnet fetch` needs, without a dependency.
 * @module
 */

import type { WriteStream } from "node:tty";

const WIDTH = 40;
const REDRAW_MS = 100;

export class ProgressBar {
  readonly #stream: WriteStream;
  readonly #label: string;
  #total = 0;
  #value = 0;
  #failed = 0;
  #started = 0;
  #drawn = 0;

  /** `label` follows the count: "URLs" gives "5/10 URLs". */
  constructor(stream: WriteStream, label: string) {
    this.#stream = stream;
    this.#label = label;
  }

  start(total: number): void {
    this.#total = total;
    this.#started = performance.now();
    this.#stream.write("\x1b[?25l"); // hide the cursor
    this.#draw();
  }

  increment(failed: number): void {
    this.#value++;
    this.#failed = failed;
    if (performance.now() - this.#drawn >= REDRAW_MS || this.#value === this.#total) this.#draw();
  }

  /** Clears the line and shows the cursor again. */
  stop(): void {
    this.#stream.write("\r\x1b[2K\x1b[?25h");
  }

  #draw(): void {
    this.#drawn = performance.now();
    const done = this.#total === 0 ? 1 : this.#value / this.#total;
    const full = Math.round(done * WIDTH);
    const elapsed = (this.#drawn - this.#started) / 1000;
    const eta = this.#value === 0 ? "?" : `${Math.round((elapsed / done) * (1 - done))}s`;
    const bar = "\u2588".repeat(full) + "\u2591".repeat(WIDTH - full);
    this.#stream.write(
      `\r\x1b[2K${bar} ${this.#value}/${this.#total} ${this.#label} | ${this.#failed} failed | ${eta} left`,
    );
  }
}
