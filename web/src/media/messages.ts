/**
 * The messages between the page's call code (media_keys.ts) and the SFrame worker
 * (sframe_worker.ts). Keys travel only in these, by postMessage, page → worker; nothing
 * the worker sends back holds key material.
 */
import type { TrackCounters } from "./frames.ts";

/** The options of `new RTCRtpScriptTransform(worker, options)`. */
export type TransformOptions =
  | { side: "send"; track: string }
  /**
   * `publisher`: the sender index whose key ids this receiver accepts (§15.8). A number binds
   * the receiver to one publisher; "csrc" takes each frame's source from its single CSRC
   * (the SFU's slots, §15.7 step 5).
   */
  | { side: "receive"; track: string; publisher: number | "csrc" };

export type ToWorker =
  /** One's own sender key: frames are sent under kid = index << 16 | epoch from now on. */
  | { id: number; type: "send-key"; index: number; epoch: number; key: Uint8Array }
  /** Stop sending (no key: frames are dropped, never sent in clear). */
  | { id: number; type: "stop-sending" }
  /** Publisher `index`'s key for `epoch` (§14.3, installed as §15.5 says); `superseded`: never its current key. */
  | { id: number; type: "receive-key"; index: number; epoch: number; key: Uint8Array; superseded?: boolean }
  /** Someone left: publisher `index`'s current key only overlaps now (§15.5). */
  | { id: number; type: "supersede"; index: number }
  /** Publisher `index` left: its keys stop after the overlap. */
  | { id: number; type: "remove"; index: number }
  /** Ask for the counters (and the key ids held, not the keys). */
  | { id: number; type: "counters" };

export type FromWorker =
  | { id: number; type: "done"; kid?: number }
  | { id: number; type: "error"; error: string; message: string }
  | { id: number; type: "counters"; tracks: Record<string, TrackCounters>; sendKid: number | null; receiveKids: number[] };
