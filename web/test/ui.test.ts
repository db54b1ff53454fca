// The UI's pure parts: routes and the plain words for times and fingerprints.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseRoute, routePath, type Route } from "../src/ui/router.ts";
import { expiresIn, groupFingerprint, initials, timeLeft, TIMERS } from "../src/ui/format.ts";

test("every route parses back from its path", () => {
  const routes: Route[] = [
    { name: "home" },
    { name: "join", inviteId: "E7tZFTo-mh0l_mNe" },
    { name: "space", slot: "m.rdVvWaYskkXldgbJ3ucTSA" },
    { name: "room", slot: "m.rdVvWaYskkXldgbJ3ucTSA", roomId: "MzFDgTXLXgrABtZA" },
    { name: "members", slot: "m.x" },
    { name: "invite", slot: "m.x" },
    { name: "settings", slot: "m.x" },
  ];
  for (const route of routes) assert.deepEqual(parseRoute(routePath(route)), route);
});

test("unknown and hostile paths are 'missing', never thrown", () => {
  for (const path of ["/nope", "/space", "/space/a/room", "/space/a/b", "/join/a/b", "/space/../x", "/space/a%2Fb", "/space/<script>"]) {
    assert.equal(parseRoute(path).name, "missing", path);
  }
  assert.deepEqual(parseRoute("/space/abc/"), { name: "space", slot: "abc" });
});

test("time left reads plainly", () => {
  const now = 1_000_000_000_000;
  assert.equal(timeLeft(now - 1, now), "");
  assert.equal(timeLeft(now + 45_000, now), "45 s");
  assert.equal(timeLeft(now + 299_000, now), "5 min");
  assert.equal(timeLeft(now + 3 * 3_600_000, now), "3 h");
  assert.equal(timeLeft(now + 5 * 86_400_000, now), "5 days");
  assert.equal(expiresIn(now - 5, now), "expired");
  assert.equal(expiresIn(now + 86_400_000, now), "in 24 h");
});

test("fingerprints group by four; initials; timers", () => {
  assert.equal(groupFingerprint("30098d96c2279df2"), "3009 8d96 c227 9df2");
  assert.equal(groupFingerprint("30098d96c2279df2", 2), "3009 8d96");
  assert.equal(initials("Ada Lovelace"), "AL");
  assert.equal(initials("  bob "), "B");
  assert.equal(initials(""), "?");
  assert.equal(initials("Alice (665a 727a)"), "A");
  assert.deepEqual(TIMERS.map((t) => t.seconds), [0, 300, 3600, 86_400, 604_800]);
});

test("lifetimes in words", async () => {
  const { duration } = await import("../src/ui/format.ts");
  assert.equal(duration(300), "5 minutes");
  assert.equal(duration(60), "1 minute");
  assert.equal(duration(7200), "2 hours");
  assert.equal(duration(2 * 86_400), "2 days");
  assert.equal(duration(90), "90 seconds");
});
