/** TimerQueue: many timeouts of one duration on one timer (server handshake timeouts). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { TimerQueue } from "../src/timer-queue.ts";

interface Owner {
  name: string;
  armedAt: number;
  firedAt?: number;
}

test("each timeout fires once, in arm order, not before its duration; cancelled ones never", async () => {
  const fired: Owner[] = [];
  const fire = (o: Owner) => {
    o.firedAt = performance.now();
    fired.push(o);
  };
  const q = TimerQueue.of(60, fire);
  const owners: Owner[] = [];
  const tickets: number[] = [];
  for (let i = 0; i < 6; i++) {
    const o = { name: `t${i}`, armedAt: performance.now() };
    owners.push(o);
    tickets.push(q.arm(o));
    await sleep(5);
  }
  q.cancel(tickets[0]!); // the oldest: dropped at once
  q.cancel(tickets[3]!); // one in the middle, behind a live one
  q.cancel(tickets[3]!); // twice is a no-op
  await sleep(200);
  assert.deepEqual(
    fired.map((o) => o.name),
    ["t1", "t2", "t4", "t5"],
  );
  for (const o of fired) {
    const after = o.firedAt! - o.armedAt;
    assert.ok(after >= 60, `${o.name} fired after ${after.toFixed(1)} ms`);
    assert.ok(after < 1000, `${o.name} fired after ${after.toFixed(1)} ms`);
  }
  q.cancel(tickets[1]!); // after it fired: a no-op
});

test("a timeout armed from inside a firing one gets its own full duration", async () => {
  const log: string[] = [];
  let q!: TimerQueue<{ name: string }>;
  const fire = (o: { name: string }) => {
    log.push(o.name);
    if (o.name === "first") q.arm({ name: "second" });
  };
  q = TimerQueue.of(40, fire);
  const t0 = performance.now();
  q.arm({ name: "first" });
  await sleep(60);
  assert.deepEqual(log, ["first"]);
  await sleep(100);
  assert.deepEqual(log, ["first", "second"]);
  assert.ok(performance.now() - t0 >= 80);
});

test("past its first 16 slots the ring grows and keeps the order, wrapped around or not", async () => {
  const fired: number[] = [];
  const q = TimerQueue.of(30, (o: { n: number }) => fired.push(o.n));
  const tickets: number[] = [];
  // Wrap the ring first: arm and cancel 10, so the next ones start mid-ring.
  for (let n = 0; n < 10; n++) q.cancel(q.arm({ n: -1 }));
  for (let n = 0; n < 40; n++) tickets.push(q.arm({ n }));
  for (const n of [0, 1, 17, 39]) q.cancel(tickets[n]!);
  await sleep(150);
  const want = Array.from({ length: 40 }, (_, n) => n).filter((n) => ![0, 1, 17, 39].includes(n));
  assert.deepEqual(fired, want);
});

test("queues are per fire function and duration", () => {
  const a = () => {};
  const b = () => {};
  assert.equal(TimerQueue.of(100, a), TimerQueue.of(100, a));
  assert.notEqual(TimerQueue.of(100, a), TimerQueue.of(200, a));
  assert.notEqual(TimerQueue.of(100, a), TimerQueue.of(100, b));
});
