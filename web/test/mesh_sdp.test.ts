// web/src/call/mesh.ts's SDP rules without a browser (§14.2 check_sdp; what is sent).
import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_CANDIDATES, outgoingSdp, sdpProblem } from "../src/call/mesh.ts";

const candidate = (i: number, proto = "udp", type = "host"): string =>
  `a=candidate:${i} 1 ${proto} 2122260223 192.0.2.${i % 250} ${5000 + i} typ ${type}`;

test("check_sdp bounds: size, candidates, a fingerprint", () => {
  const base = "v=0\r\na=fingerprint:sha-256 AA:BB\r\n";
  assert.equal(sdpProblem(base), null);
  assert.match(sdpProblem("v=0\r\n") ?? "", /no DTLS fingerprint/);
  const many = base + Array.from({ length: MAX_CANDIDATES + 1 }, (_, i) => candidate(i)).join("\r\n");
  assert.match(sdpProblem(many) ?? "", /more than 32 candidates/);
  assert.match(sdpProblem(base + "a=x\r\n".repeat(7000)) ?? "", /larger than 32768 bytes/);
});

test("what is sent: no TCP candidates, at most 32, and relay-only needs a relay", () => {
  const lines = ["v=0", "a=fingerprint:sha-256 AA", candidate(1, "tcp"), ...Array.from({ length: 40 }, (_, i) => candidate(i + 2))];
  const out = outgoingSdp(lines.join("\r\n"), false);
  assert.equal(out.split("a=candidate:").length - 1, MAX_CANDIDATES);
  assert.ok(!out.includes(" tcp "));
  assert.throws(() => outgoingSdp(lines.join("\r\n"), true), /relay-only: no relay candidate/);
  assert.doesNotThrow(() => outgoingSdp(["v=0", candidate(1, "udp", "relay")].join("\r\n"), true));
});
