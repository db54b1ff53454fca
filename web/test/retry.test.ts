// web/src/call/retry.ts: the media link retry policy (the same as client/call/retry.py),
// driven by a fake clock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { RetryPolicy, transportState } from "../src/call/retry.ts";

class Clock {
  now = 100_000;
  readonly read = (): number => this.now;
}

/** Poll every `step` ms until a retry (started at once, as a link does); its time. */
function nextRetry(policy: RetryPolicy, clock: Clock, step = 50): number {
  for (let i = 0; i < 60_000 / step; i++) {
    clock.now += step;
    if (policy.poll() === "retry") {
      policy.attemptStarted();
      return clock.now;
    }
  }
  throw new Error("no retry within 60 s");
}

/** Poll every `step` ms for `ms`; the decisions made. */
function run(policy: RetryPolicy, clock: Clock, ms: number, step = 50): string[] {
  const out: string[] = [];
  for (let t = 0; t < ms; t += step) {
    clock.now += step;
    const decision = policy.poll();
    if (decision !== null) out.push(decision);
    if (decision === "retry") policy.attemptStarted();
  }
  return out;
}

test("a connected link is left alone", () => {
  const clock = new Clock();
  const policy = new RetryPolicy(clock.read);
  policy.observe("connected");
  assert.deepEqual(run(policy, clock, 60_000), []);
});

test("a failed link is retried soon, with growing jittered delays", () => {
  const clock = new Clock();
  const policy = new RetryPolicy(clock.read, { retryDeadlineMs: 1e9, random: () => 0.5 });
  policy.observe("connected");
  policy.observe("failed");
  const times = [nextRetry(policy, clock)];
  assert.ok(times[0]! - 100_000 >= 250 && times[0]! - 100_000 <= 550);
  for (let i = 0; i < 4; i++) {
    policy.observe("failed");
    times.push(nextRetry(policy, clock));
  }
  const gaps = times.slice(1).map((t, i) => t - times[i]!);
  // nominal 1 s, 2 s, 4 s, 4 s (the cap), each drawn from [nominal/2, nominal] (3/4 here),
  // counted from the first poll after the failure (one 50 ms step).
  assert.deepEqual(gaps, [800, 1550, 3050, 3050]);
});

test("a browser's disconnected gets a grace period, then a retry", () => {
  const clock = new Clock();
  const policy = new RetryPolicy(clock.read, { disconnectedGraceMs: 4_000 });
  policy.observe("connected");
  policy.observe(transportState("disconnected"));
  assert.deepEqual(run(policy, clock, 3_900), []);
  assert.deepEqual(run(policy, clock, 1_000), ["retry"]);
  assert.equal(policy.outageStarted, 100_000);
});

test("a link that comes back by itself is not retried nor counted", () => {
  const clock = new Clock();
  const policy = new RetryPolicy(clock.read);
  policy.observe("connected");
  policy.observe("disconnected");
  run(policy, clock, 3_000);
  policy.observe("connected");
  assert.deepEqual(run(policy, clock, 30_000), []);
  assert.equal(policy.reconnects, 0);
});

test("an attempt that never connects is retried after its deadline, a retry sooner", () => {
  const clock = new Clock();
  const policy = new RetryPolicy(clock.read, { connectDeadlineMs: 20_000, retryDeadlineMs: 6_000 });
  assert.deepEqual(run(policy, clock, 19_900), []);
  assert.deepEqual(run(policy, clock, 1_000), ["retry"]);
  assert.deepEqual(run(policy, clock, 7_100), ["retry"]);
});

test("a ten-second outage is ridden out and counted as one reconnect", () => {
  const clock = new Clock();
  const policy = new RetryPolicy(clock.read);
  policy.attemptStarted();
  policy.observe("connected");
  policy.observe("disconnected");
  const decisions = run(policy, clock, 10_000);
  assert.ok(decisions.length > 0 && decisions.every((d) => d === "retry"));
  policy.observe("connected");
  assert.equal(policy.reconnects, 1);
  assert.ok(policy.recoveredMs !== null && policy.recoveredMs >= 10_000 && policy.recoveredMs <= 10_100);
});

test("it gives up once, after the bound", () => {
  const clock = new Clock();
  const policy = new RetryPolicy(clock.read, { giveUpAfterMs: 30_000 });
  policy.observe("connected");
  policy.observe("failed");
  const decisions: string[] = [];
  let at = 0;
  for (let i = 0; i < 800; i++) {
    clock.now += 50;
    const decision = policy.poll();
    if (decision === null) continue;
    decisions.push(decision);
    if (decision === "give-up") at = clock.now - 100_000;
    else {
      policy.attemptStarted();
      policy.observe("failed");
    }
  }
  assert.equal(decisions.filter((d) => d === "give-up").length, 1);
  assert.ok(at >= 30_000 && at <= 30_100, String(at));
  assert.ok(decisions.filter((d) => d === "retry").length >= 8);
  assert.ok(policy.gaveUp);
});

test("browser states map onto the policy's", () => {
  assert.equal(transportState("new"), "connecting");
  assert.equal(transportState("connecting"), "connecting");
  assert.equal(transportState("connected"), "connected");
  assert.equal(transportState("disconnected"), "disconnected");
  assert.equal(transportState("failed"), "failed");
  assert.equal(transportState("closed"), "failed");
});
