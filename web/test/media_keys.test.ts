/** media_keys.ts: a browser without RTCRtpScriptTransform gets a clear error, not a call in clear. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { MediaE2EEUnsupported, MediaKeys, mediaE2EEProblem } from "../src/media/media_keys.ts";

test("feature detection: no Worker, no RTCRtpScriptTransform", () => {
  const g = globalThis as Record<string, unknown>;
  const saved = { Worker: g["Worker"], RTCRtpScriptTransform: g["RTCRtpScriptTransform"] };
  try {
    delete g["Worker"];
    delete g["RTCRtpScriptTransform"];
    assert.match(mediaE2EEProblem() ?? "", /web workers/);
    g["Worker"] = class {};
    assert.match(mediaE2EEProblem() ?? "", /RTCRtpScriptTransform/);
    assert.throws(() => MediaKeys.start("/sframe_worker.js"), MediaE2EEUnsupported);
    g["RTCRtpScriptTransform"] = class {};
    assert.equal(mediaE2EEProblem(), null);
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete g[k];
      else g[k] = v;
    }
  }
});
