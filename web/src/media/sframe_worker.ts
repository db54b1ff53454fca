/**
 * The SFrame media worker (PROTOCOL.md §15): every RTCRtpScriptTransform of one participant
 * runs here, so its tracks share one sending counter per key id (§15.3) and one set of
 * receiving contexts. Modelled on the W3C WebRTC samples' encoded-transform demo: one worker,
 * messages in (keys, from the page's call code only), frames through.
 *
 * Sender: every encoded frame is protected under the current key (codec header bytes in clear,
 * §15.4); without a key the frame is dropped, never sent in clear. Receiver: a frame is opened
 * only with its source's context and only under a key id naming that source (§15.8); frames
 * that fail, replay, or name another sender are dropped and counted, never passed to the
 * decoder. Nothing here logs; no key leaves this worker.
 *
 * SFU only: mesh media is DTLS-SRTP end to end (§14.2), not SFrame.
 */
import { type Codec, clearSize } from "../protocol/sframe.ts";
import {
  type TrackCounters, FrameQueue, HOLD_MS, SlotPicture, KeyIdExhausted, MediaKeyError, MediaReceivers, MediaSender, countDrop,
  newCounters,
} from "./frames.ts";
import type { FromWorker, ToWorker, TransformOptions } from "./messages.ts";

const scope = self as unknown as DedicatedWorkerGlobalScope;
const sender = new MediaSender();
const receivers = new MediaReceivers();
const tracks = new Map<string, TrackCounters>();
const videoSenders = new Set<RTCRtpScriptTransformer>();
/** Every receiving transform's queue of frames (some may wait for their key). */
const receiving = new Map<RTCRtpScriptTransformer, FrameQueue<Incoming>>();

interface Incoming {
  frame: Encoded;
  codec: Codec;
  data: Uint8Array;
}

type Encoded = RTCEncodedVideoFrame | RTCEncodedAudioFrame;

function kindOf(frame: Encoded): "video" | "audio" {
  return "type" in frame ? "video" : "audio";
}

/** VP8 video, Opus audio; anything else (H.264 breaks with transformed frames) is dropped. */
function codecOf(frame: Encoded, kind: "video" | "audio"): Codec | null {
  const mime = frame.getMetadata().mimeType?.toLowerCase();
  if (kind === "video") return mime === undefined || mime === "video/vp8" ? "vp8" : null;
  return mime === undefined || mime === "audio/opus" ? "opus" : null;
}

function sourceOf(frame: Encoded, publisher: number | "csrc"): number | null {
  if (publisher !== "csrc") return publisher;
  const csrcs = frame.getMetadata().contributingSources ?? [];
  return csrcs.length === 1 ? (csrcs[0] ?? null) : null;
}

function counters(track: string, side: "send" | "receive"): TrackCounters {
  let c = tracks.get(track);
  if (c === undefined) {
    c = newCounters(side);
    tracks.set(track, c);
  }
  return c;
}

function attach(transformer: RTCRtpScriptTransformer): void {
  const options = transformer.options as TransformOptions;
  const c = counters(options.track, options.side);
  let video = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  /** Frames wait: look again when the oldest may no longer (HOLD_MS), if no frame or key comes first. */
  const later = (): void => {
    if (timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      void queue?.retry(Date.now()).then(() => {
        if ((queue?.waiting ?? 0) > 0) later();
      });
    }, HOLD_MS);
  };
  let queue: FrameQueue<Incoming> | undefined;
  let output: TransformStreamDefaultController<Encoded> | undefined;
  /** Whose picture this receiver's decoder holds (video, §15.8). */
  const picture = new SlotPicture();
  if (options.side === "receive") {
    const publisher = options.publisher;
    if (publisher !== "csrc") receivers.expect(publisher);
    queue = new FrameQueue<Incoming>(
      async (f) => {
        const start = performance.now();
        const opened = await receivers.open(sourceOf(f.frame, publisher), f.codec, f.data, Date.now());
        c.cryptoMs += performance.now() - start;
        return opened;
      },
      (f, opened) => {
        const out = opened.frame;
        if (f.codec === "vp8" && !picture.admit(opened.kid, out)) {
          c.droppedOtherSender++; // another sender's delta frame: never on this picture
          return;
        }
        f.frame.data = out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength) as ArrayBuffer;
        c.decrypted++;
        c.bytes += out.length;
        c.lastKid = opened.kid;
        try {
          output?.enqueue(f.frame);
        } catch {
          // the receiver was closed meanwhile
        }
      },
      (f, opened) => {
        countDrop(c, opened.drop);
        c.lastDrop = `${opened.drop}: ${opened.detail} (${f.data.length} bytes)`;
      },
      (f) => sourceOf(f.frame, publisher), // one publisher's waiting frames never hold up another's
    );
    receiving.set(transformer, queue);
  }
  const transform = new TransformStream<Encoded, Encoded>({
    start(controller) {
      output = controller;
    },
    async transform(frame, controller) {
      const kind = kindOf(frame);
      c.kind = kind;
      const codec = codecOf(frame, kind);
      if (codec === null) {
        c.droppedOther++;
        return;
      }
      const data = new Uint8Array(frame.data);
      const start = performance.now();
      if (options.side === "send") {
        if (kind === "video" && !video) {
          video = true;
          videoSenders.add(transformer);
        }
        const out = await sender.protect(codec, data);
        c.cryptoMs += performance.now() - start;
        if (out === null) {
          c.droppedOther++;
          return;
        }
        frame.data = out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength) as ArrayBuffer;
        c.encrypted++;
        c.bytes += data.length;
        if (data.length < clearSize(codec, data) || data.length === 0) c.sentShort++;
        c.lastKid = sender.kid;
        controller.enqueue(frame);
        return;
      }
      await queue?.push({ frame, codec, data }, Date.now());
      c.held = queue?.waited ?? 0;
      if (queue !== undefined && queue.waiting > 0) later();
    },
  });
  transformer.readable.pipeThrough(transform).pipeTo(transformer.writable).catch(() => {
    videoSenders.delete(transformer); // the sender or receiver was closed
    receiving.delete(transformer);
  });
}

scope.onrtctransform = (event: RTCTransformEvent) => attach(event.transformer);

async function keyframeNext(): Promise<void> {
  for (const t of videoSenders) {
    try {
      await t.generateKeyFrame();
    } catch {
      // not supported here, or not sending yet: the new key id still applies to the next frame
    }
  }
}

async function handle(msg: ToWorker): Promise<FromWorker> {
  switch (msg.type) {
    case "send-key": {
      const kid = await sender.setKey(msg.index, msg.epoch, msg.key);
      receivers.self = msg.index;
      void keyframeNext();
      return { id: msg.id, type: "done", kid };
    }
    case "stop-sending":
      sender.clear();
      return { id: msg.id, type: "done" };
    case "receive-key": {
      const kid = await receivers.setKey(msg.index, msg.epoch, msg.key, Date.now(), msg.superseded === true);
      for (const q of receiving.values()) void q.retry(Date.now()); // frames that waited for it
      return { id: msg.id, type: "done", kid };
    }
    case "supersede":
      receivers.supersede(msg.index, Date.now());
      return { id: msg.id, type: "done" };
    case "remove":
      receivers.remove(msg.index, Date.now());
      return { id: msg.id, type: "done" };
    case "counters":
      return {
        id: msg.id, type: "counters", tracks: Object.fromEntries([...tracks].map(([k, v]) => [k, { ...v }])),
        sendKid: sender.kid, receiveKids: receivers.kids(Date.now()),
      };
  }
}

// Messages are handled one at a time, in order (a key, then the counters that follow it).
let queue: Promise<void> = Promise.resolve();
scope.onmessage = (event: MessageEvent<ToWorker>) => {
  const msg = event.data;
  queue = queue.then(async () => {
    let reply: FromWorker;
    try {
      reply = await handle(msg);
    } catch (e) {
      const error = e instanceof KeyIdExhausted ? "KeyIdExhausted" : e instanceof MediaKeyError ? "MediaKeyError" : "Error";
      reply = { id: msg.id, type: "error", error, message: e instanceof Error ? e.message : "failed" };
    } finally {
      if ("key" in msg) msg.key.fill(0);
    }
    scope.postMessage(reply);
  });
};
