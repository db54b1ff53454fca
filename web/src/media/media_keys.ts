/**
 * The page's side of media E2EE on the SFU (PROTOCOL.md §15): one SFrame worker per call
 * participant, transforms on its RTCRtpSenders and RTCRtpReceivers, keys posted to the worker
 * (only there: callers should drop their copies), counters read back.
 *
 * SFU only: mesh media is DTLS-SRTP end to end between the pair (§14.2); its media keys feed
 * only the verification code (§14.4), so mesh senders and receivers get no transform.
 *
 *   const media = MediaKeys.start(new URL("/sframe_worker.js", location.href));
 *   await media.setSendKey(myIndex, epoch, key);
 *   media.attachSender(pc.addTrack(track, stream), "camera");
 *   await media.setReceiveKey(bobIndex, bobEpoch, bobKey);
 *   media.attachReceiver(transceiver.receiver, "slot-1", "csrc");
 *   const c = await media.counters();   // per track: encrypted, decrypted, failures, …
 */
import type { TrackCounters } from "./frames.ts";
import type { FromWorker, ToWorker, TransformOptions } from "./messages.ts";

export type { TrackCounters, TransformOptions };

/** The browser cannot run the SFrame transform (no RTCRtpScriptTransform or no Worker). */
export class MediaE2EEUnsupported extends Error {
  override name = "MediaE2EEUnsupported";
}

/** The worker refused a key or a request (the message never holds key material). */
export class MediaKeyRefused extends Error {
  override name = "MediaKeyRefused";
  constructor(readonly kind: string, message: string) {
    super(message);
  }
}

export interface Counters {
  tracks: Record<string, TrackCounters>;
  /** The key id one sends under now, or null. */
  sendKid: number | null;
  /** The key ids held for receiving (current and overlapping ones). */
  receiveKids: number[];
}

/** Null when the browser can run the transform; else why not, in words for a person. */
export function mediaE2EEProblem(): string | null {
  if (typeof Worker === "undefined") return "this browser has no web workers, so calls cannot be end-to-end encrypted here";
  if (typeof RTCRtpScriptTransform === "undefined") {
    return "this browser cannot encrypt call media end to end (it lacks RTCRtpScriptTransform): use a current Chromium, Firefox or Safari";
  }
  return null;
}

export class MediaKeys {
  readonly #worker: Worker;
  #next = 1;
  readonly #pending = new Map<number, { resolve: (m: FromWorker) => void; reject: (e: Error) => void }>();

  private constructor(worker: Worker) {
    this.#worker = worker;
    worker.onmessage = (event: MessageEvent<FromWorker>) => {
      const msg = event.data;
      const p = this.#pending.get(msg.id);
      if (p === undefined) return;
      this.#pending.delete(msg.id);
      if (msg.type === "error") p.reject(new MediaKeyRefused(msg.error, msg.message));
      else p.resolve(msg);
    };
    worker.onerror = () => {
      for (const p of this.#pending.values()) p.reject(new Error("the media worker failed"));
      this.#pending.clear();
    };
  }

  /** Starts the worker (a same-origin module script: CSP `worker-src 'self'`). */
  static start(workerUrl: URL | string): MediaKeys {
    const problem = mediaE2EEProblem();
    if (problem !== null) throw new MediaE2EEUnsupported(problem);
    return new MediaKeys(new Worker(workerUrl, { type: "module", name: "sframe" }));
  }

  #send(msg: ToWorker, transfer: Transferable[] = []): Promise<FromWorker> {
    return new Promise((resolve, reject) => {
      this.#pending.set(msg.id, { resolve, reject });
      this.#worker.postMessage(msg, transfer);
    });
  }

  #id(): number {
    return this.#next++;
  }

  /** A copy for the worker, transferred (so no second copy stays on this side of it). */
  static #copy(key: Uint8Array): Uint8Array<ArrayBuffer> {
    return new Uint8Array(key);
  }

  /** One's own key for (sender index, epoch): every sender transform protects under it from now on. */
  async setSendKey(index: number, epoch: number, key: Uint8Array): Promise<number> {
    const k = MediaKeys.#copy(key);
    const r = await this.#send({ id: this.#id(), type: "send-key", index, epoch, key: k }, [k.buffer]);
    return r.type === "done" ? (r.kid ?? -1) : -1;
  }

  /** Stop sending: frames are dropped until the next key (never sent in clear). */
  async stopSending(): Promise<void> {
    await this.#send({ id: this.#id(), type: "stop-sending" });
  }

  /** Publisher `index`'s key for `epoch`; `superseded`: it only decrypts a while, never as the current key (§15.5). */
  async setReceiveKey(index: number, epoch: number, key: Uint8Array, superseded = false): Promise<number> {
    const k = MediaKeys.#copy(key);
    const r = await this.#send({ id: this.#id(), type: "receive-key", index, epoch, key: k, superseded }, [k.buffer]);
    return r.type === "done" ? (r.kid ?? -1) : -1;
  }

  /** A participant left: publisher `index`'s current key only overlaps (2 s) from now. */
  async supersede(index: number): Promise<void> {
    await this.#send({ id: this.#id(), type: "supersede", index });
  }

  /** Publisher `index` left: its keys stop after the overlap. */
  async removePublisher(index: number): Promise<void> {
    await this.#send({ id: this.#id(), type: "remove", index });
  }

  /** Encrypts every frame `sender` sends (VP8 or Opus). */
  attachSender(sender: RTCRtpSender, track: string): void {
    const options: TransformOptions = { side: "send", track };
    sender.transform = new RTCRtpScriptTransform(this.#worker, options);
  }

  /** Decrypts what `receiver` gets, accepting only `publisher`'s key ids (a sender index, or "csrc" on SFU slots). */
  attachReceiver(receiver: RTCRtpReceiver, track: string, publisher: number | "csrc"): void {
    const options: TransformOptions = { side: "receive", track, publisher };
    receiver.transform = new RTCRtpScriptTransform(this.#worker, options);
  }

  async counters(): Promise<Counters> {
    const r = await this.#send({ id: this.#id(), type: "counters" });
    if (r.type !== "counters") throw new Error("unexpected reply from the media worker");
    return { tracks: r.tracks, sendKid: r.sendKid, receiveKids: r.receiveKids };
  }

  /** Ends the worker: its keys go with it. */
  close(): void {
    this.#worker.terminate();
    for (const p of this.#pending.values()) p.reject(new Error("the media worker was closed"));
    this.#pending.clear();
  }
}
