// web/src/call/view.ts: how big the page shows each SFU slot, and when that goes to the server
// (SfuView, PROTOCOL.md §15.6). The DOM observers are exercised in Chromium
// (tests/test_web_call_view.py); here the pure parts, with real timers kept short.
import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_VIEW_HEIGHT, type SlotView } from "../src/protocol/conference_wire.ts";
import { sameView, ShownTracks, shownHeight, slotViews, ViewSender } from "../src/call/view.ts";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, what: string, ms = 2_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail(what);
    await sleep(5);
  }
}

test("shownHeight: device pixels, rounded, bounded; 0 when not shown", () => {
  assert.equal(shownHeight(180, 1, true), 180);
  assert.equal(shownHeight(180, 2, true), 360);
  assert.equal(shownHeight(100.4, 1.5, true), 151);
  assert.equal(shownHeight(0.2, 1, true), 1); // a sliver is still shown
  assert.equal(shownHeight(5000, 2, true), MAX_VIEW_HEIGHT);
  assert.equal(shownHeight(180, 2, false), 0);
  assert.equal(shownHeight(0, 2, true), 0);
  assert.equal(shownHeight(Number.NaN, 2, true), 0);
  assert.equal(shownHeight(180, 0, true), 180);
});

test("ShownTracks: the largest element showing a track wins, in device pixels now; gone elements count no more", () => {
  let ratio = 1;
  const shown = new ShownTracks(() => ratio);
  let changes = 0;
  shown.onChange(() => changes++);
  const a = {}, b = {};
  shown.set(a, "t1", 200);
  shown.set(b, "t1", 500);
  shown.set(b, "t1", 500); // no change
  assert.equal(shown.height("t1"), 500);
  assert.equal(shown.height("t2"), 0);
  ratio = 2; // the window moved to a denser screen: no resize, twice the device pixels
  assert.equal(shown.height("t1"), 1000);
  shown.delete(b);
  assert.equal(shown.height("t1"), 400);
  shown.set(a, "t1", 0); // hidden
  assert.equal(shown.height("t1"), 0);
  assert.equal(changes, 4);
});

test("slotViews: showing slots with their height, idle slots left out, all 0 on a hidden page", () => {
  const slots = [
    { mid: "3", trackId: "a", showing: true },
    { mid: "4", trackId: "b", showing: false },
    { mid: null, trackId: "c", showing: true },
    { mid: "5", trackId: "d", showing: true },
  ];
  const heights: Record<string, number> = { a: 360, d: 0 };
  const heightOf = (id: string): number => heights[id] ?? 0;
  assert.deepEqual(slotViews(slots, heightOf, false), [{ mid: "3", height: 360 }, { mid: "5", height: 0 }]);
  assert.deepEqual(slotViews(slots, heightOf, true), [
    { mid: "3", height: 0 }, { mid: "4", height: 0 }, { mid: "5", height: 0 },
  ]);
  assert.ok(sameView([{ mid: "3", height: 1 }], [{ mid: "3", height: 1 }]));
  assert.ok(!sameView([{ mid: "3", height: 1 }], [{ mid: "3", height: 2 }]));
  assert.ok(!sameView([], null));
});

test("ViewSender: debounced, only changes, never faster than its interval, again after reset", async () => {
  const sent: SlotView[][] = [];
  const sender = new ViewSender(async (slots) => void sent.push(slots), { debounceMs: 30, minIntervalMs: 150 });
  sender.update([{ mid: "3", height: 100 }]);
  sender.update([{ mid: "3", height: 200 }]);
  sender.update([{ mid: "3", height: 300 }]); // a drag: only the last one goes
  await until(() => sent.length === 1, "the first view");
  assert.deepEqual(sent, [[{ mid: "3", height: 300 }]]);
  const first = Date.now();
  sender.update([{ mid: "3", height: 300 }]); // the same again: nothing
  sender.update([{ mid: "3", height: 120 }]);
  await until(() => sent.length === 2, "the changed view");
  assert.ok(Date.now() - first >= 100, "not before the interval");
  sender.update([{ mid: "3", height: 120 }]);
  await sleep(250);
  assert.equal(sent.length, 2);
  sender.reset(); // a new connection: the node knows nothing
  await until(() => sent.length === 3, "the view again after a reset");
  assert.deepEqual(sent[2], [{ mid: "3", height: 120 }]);
  assert.equal(sender.counters.sent, 3);
  sender.close();
  sender.update([{ mid: "3", height: 1 }]);
  await sleep(250);
  assert.equal(sent.length, 3);
});

test("ViewSender: a refused view is tried again later, not at once", async () => {
  let refuse = true;
  const tries: number[] = [];
  const sender = new ViewSender(
    async () => {
      tries.push(Date.now());
      if (refuse) throw new Error("rate_limited");
    },
    { debounceMs: 10, minIntervalMs: 20, retryMs: 200 },
  );
  sender.update([{ mid: "3", height: 100 }]);
  await until(() => tries.length === 1, "the first try");
  refuse = false;
  sender.update([{ mid: "3", height: 101 }]);
  await until(() => tries.length === 2, "the second try", 3_000);
  assert.ok(tries[1]! - tries[0]! >= 180, `retried after ${tries[1]! - tries[0]!} ms`);
  assert.deepEqual(sender.sent, [{ mid: "3", height: 101 }]);
  assert.deepEqual(sender.counters, { sent: 1, refused: 1 });
  sender.close();
});
