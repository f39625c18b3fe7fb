/** The CLI's progress bar (src/cli/progress.ts), which replaced the cli-progress package. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { WriteStream } from "node:tty";
import { ProgressBar } from "../src/cli/progress.ts";

function capture(): { stream: WriteStream; writes: string[] } {
  const writes: string[] = [];
  const stream = { write: (s: string) => writes.push(s) > 0 } as unknown as WriteStream;
  return { stream, writes };
}

test("draws count, failures and bar, hides the cursor, then clears the line", () => {
  const { stream, writes } = capture();
  const bar = new ProgressBar(stream, "URLs");
  bar.start(4);
  assert.equal(writes[0], "\x1b[?25l");
  assert.equal(writes[1], `\r\x1b[2K${"░".repeat(40)} 0/4 URLs | 0 failed | ? left`);
  bar.increment(0);
  bar.increment(1);
  bar.increment(1);
  bar.increment(2);
  // The last increment always draws, whatever the throttle.
  assert.equal(writes.at(-1), `\r\x1b[2K${"█".repeat(40)} 4/4 URLs | 2 failed | 0s left`);
  bar.stop();
  assert.equal(writes.at(-1), "\r\x1b[2K\x1b[?25h");
});

test("redraws at most ten times a second", () => {
  const { stream, writes } = capture();
  const bar = new ProgressBar(stream, "URLs");
  bar.start(1000);
  for (let i = 0; i < 999; i++) bar.increment(0);
  // start's two writes, perhaps a redraw if the loop took over 100 ms, no more per 100 ms.
  assert.ok(writes.length <= 2 + 10, `${writes.length} writes`);
  bar.increment(0);
  assert.match(writes.at(-1)!, / 1000\/1000 URLs /);
});
