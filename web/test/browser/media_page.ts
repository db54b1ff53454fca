/**
 * A test page for the SFrame worker in a real browser (tests/test_web_media.py, Chromium via
 * Playwright, Firefox via puppeteer-core): two participants in one page, each with its own
 * worker (MediaKeys), joined by two RTCPeerConnections. The sender's transforms protect VP8 and
 * Opus frames; the receiver's open them; what the receiver decodes (video colour, audio level)
 * and the workers' counters are returned. The key bytes stay in this page's locals.
 */
import { MediaKeys, mediaE2EEProblem } from "../../src/media/media_keys.ts";
import { MediaReceivers, MediaSender } from "../../src/media/frames.ts";

export interface Scenario {
  /** The sender's index (its key ids name it). */
  senderIndex: number;
  /** The publisher the receiver is bound to (§15.8), or "csrc" (each frame's single CSRC). */
  publisher: number | "csrc";
  /** The receiver gets another key than the sender's. */
  wrongKey: boolean;
  /** Stop when this many video frames were decoded… */
  wantDecoded: number;
  /** …or when the receiver counted this many dropped or failed video frames. */
  wantDropped: number;
  timeoutMs: number;
  /**
   * Then move the sender to epoch 1 (a new key): "receiver-first" installs it at the receiver
   * before the sender switches (make-before-break); "sender-first" switches the sender and
   * gives the receiver the key `keyDelayMs` later (frames in between have no key yet).
   */
  rotate?: "receiver-first" | "sender-first";
  keyDelayMs?: number;
  /** Then the sender leaves: the receiver removes its keys (they stop after the overlap). */
  leave?: boolean;
}

export interface Phase {
  framesDecoded: number;
  receiveKids: number[];
  receiver: unknown;
  sender: unknown;
  elapsedMs: number;
}

export interface Outcome {
  problem: string | null;
  framesDecoded: number;
  audioPeak: number;
  colour: number[];
  /** How much the decoded picture varies (0 for one solid colour). */
  spread: number;
  elapsedMs: number;
  /** The received audio's level and energy in getStats (after decoding; for where WebAudio cannot run). */
  statsAudioLevel: number;
  statsAudioEnergy: number;
  /** The receiver's AudioContext state (WebAudio runs only when "running"). */
  audioState: string;
  /** After the rotation: the receiver's key ids at once, and once it decodes under the new key. */
  rotatedKids?: number[];
  afterRotate?: Phase;
  /** The key ids held once the overlap is over. */
  kidsAfterOverlap?: number[];
  /** After the leave: when the first frame found no key, and 20 dropped frames later. */
  leaveAtMs?: number;
  leaveFirstDrop?: Phase;
  afterLeave?: Phase;
  sender: unknown;
  receiver: unknown;
}

const WORKER = new URL("./sframe_worker.js", location.href);

function prefer(t: RTCRtpTransceiver, mime: string): void {
  const caps = RTCRtpReceiver.getCapabilities(t.receiver.track.kind);
  const codecs = (caps?.codecs ?? []).filter((c) => c.mimeType.toLowerCase() === mime);
  if (codecs.length > 0 && "setCodecPreferences" in t) t.setCodecPreferences(codecs);
}

const random = (): Uint8Array => crypto.getRandomValues(new Uint8Array(32));
const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Inbound {
  type: string;
  kind?: string;
  framesDecoded?: number;
  audioLevel?: number;
  totalAudioEnergy?: number;
}

/** Video frames decoded, and the received audio's level as the browser measured it after decoding. */
async function inbound(pc: RTCPeerConnection): Promise<{ framesDecoded: number; audioLevel: number; audioEnergy: number }> {
  const out = { framesDecoded: 0, audioLevel: 0, audioEnergy: 0 };
  (await pc.getStats()).forEach((s: Inbound) => {
    if (s.type !== "inbound-rtp") return;
    if (s.kind === "video") out.framesDecoded += s.framesDecoded ?? 0;
    if (s.kind === "audio") {
      out.audioLevel = Math.max(out.audioLevel, s.audioLevel ?? 0);
      out.audioEnergy += s.totalAudioEnergy ?? 0;
    }
  });
  return out;
}

function picture(video: HTMLVideoElement, canvas: HTMLCanvasElement): { colour: number[]; spread: number } {
  const w = (canvas.width = 64);
  const h = (canvas.height = 48);
  const g = canvas.getContext("2d", { willReadFrequently: true });
  if (g === null || video.videoWidth === 0) return { colour: [], spread: 0 };
  g.drawImage(video, 0, 0, w, h);
  const px = g.getImageData(0, 0, w, h).data;
  const sum = [0, 0, 0];
  const lo = [255, 255, 255];
  const hi = [0, 0, 0];
  for (let i = 0; i < px.length; i += 4) {
    for (let c = 0; c < 3; c++) {
      const v = px[i + c] ?? 0;
      sum[c] = (sum[c] ?? 0) + v;
      lo[c] = Math.min(lo[c] ?? 0, v);
      hi[c] = Math.max(hi[c] ?? 0, v);
    }
  }
  return {
    colour: sum.map((s) => Math.round(s / (w * h))),
    spread: Math.max(...hi.map((v, c) => v - (lo[c] ?? 0))),
  };
}

export async function loopback(s: Scenario): Promise<Outcome> {
  const problem = mediaE2EEProblem();
  const out: Outcome = { problem, framesDecoded: 0, audioPeak: 0, colour: [], spread: 0, elapsedMs: 0, statsAudioLevel: 0, statsAudioEnergy: 0, audioState: "", sender: null, receiver: null };
  if (problem !== null) return out;
  const start = performance.now();
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
  const a = MediaKeys.start(WORKER);
  const b = MediaKeys.start(WORKER);
  const key = random();
  await a.setSendKey(s.senderIndex, 0, key);
  await b.setReceiveKey(s.senderIndex, 0, s.wrongKey ? random() : key);
  if (typeof s.publisher === "number" && s.publisher !== s.senderIndex) await b.setReceiveKey(s.publisher, 0, random());
  key.fill(0);

  const pc1 = new RTCPeerConnection();
  const pc2 = new RTCPeerConnection();
  pc1.onicecandidate = (e) => void (e.candidate && pc2.addIceCandidate(e.candidate));
  pc2.onicecandidate = (e) => void (e.candidate && pc1.addIceCandidate(e.candidate));
  const video = document.createElement("video");
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  const audio = document.createElement("audio");
  audio.muted = true;
  audio.autoplay = true;
  document.body.append(video, audio);
  const canvas = document.createElement("canvas");
  let analyser: AnalyserNode | null = null;
  const ctx = new AudioContext();
  pc2.ontrack = (e) => {
    b.attachReceiver(e.receiver, e.track.kind, s.publisher);
    const ms = new MediaStream([e.track]);
    if (e.track.kind === "video") video.srcObject = ms;
    else {
      audio.srcObject = ms; // Chromium feeds WebAudio from a remote track only while it plays somewhere
      analyser = ctx.createAnalyser();
      ctx.createMediaStreamSource(ms).connect(analyser);
    }
  };
  for (const track of stream.getTracks()) {
    const t = pc1.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    prefer(t, track.kind === "video" ? "video/vp8" : "audio/opus");
    a.attachSender(t.sender, track.kind);
  }
  await pc1.setLocalDescription();
  await pc2.setRemoteDescription(pc1.localDescription as RTCSessionDescriptionInit);
  await pc2.setLocalDescription();
  await pc1.setRemoteDescription(pc2.localDescription as RTCSessionDescriptionInit);
  void ctx.resume();

  const samples = new Float32Array(2048);
  for (;;) {
    await tick(100);
    const stats = await inbound(pc2);
    out.framesDecoded = stats.framesDecoded;
    out.statsAudioLevel = Math.max(out.statsAudioLevel, stats.audioLevel);
    out.statsAudioEnergy = stats.audioEnergy;
    const an = analyser as AnalyserNode | null;
    if (an !== null) {
      an.getFloatTimeDomainData(samples);
      for (const v of samples) out.audioPeak = Math.max(out.audioPeak, Math.abs(v));
    }
    if (out.framesDecoded > 0) Object.assign(out, picture(video, canvas));
    const rc = await b.counters();
    const v = rc.tracks["video"];
    const dropped = v === undefined ? 0 : v.failures + v.droppedForeignKid + v.droppedNoKey;
    const enough = s.wantDecoded > 0
      ? out.framesDecoded >= s.wantDecoded && out.colour.length > 0
        && (out.audioPeak > 0.01 || (ctx.state !== "running" && out.statsAudioLevel > 0.01))
      : dropped >= s.wantDropped && (rc.tracks["audio"]?.decrypted ?? 0) + (rc.tracks["audio"]?.failures ?? 0)
        + (rc.tracks["audio"]?.droppedForeignKid ?? 0) > 0;
    if (enough || performance.now() - start > s.timeoutMs) break;
  }
  const phase = async (): Promise<Phase> => {
    const rc = await b.counters();
    return {
      framesDecoded: (await inbound(pc2)).framesDecoded, receiveKids: rc.receiveKids, receiver: rc,
      sender: await a.counters(), elapsedMs: performance.now() - start,
    };
  };
  const until = async (done: (p: Phase) => boolean, ms: number): Promise<Phase> => {
    const end = performance.now() + ms;
    for (;;) {
      const p = await phase();
      if (done(p) || performance.now() > end) return p;
      await tick(100);
    }
  };
  const rxVideo = (p: Phase): { decrypted: number; droppedNoKey: number; lastKid: number | null } =>
    (p.receiver as { tracks: Record<string, { decrypted: number; droppedNoKey: number; lastKid: number | null }> })
      .tracks["video"] ?? { decrypted: 0, droppedNoKey: 0, lastKid: null };
  if (s.rotate !== undefined) {
    const key2 = random();
    const before = out.framesDecoded;
    const kid1 = s.senderIndex * 65536 + 1;
    if (s.rotate === "receiver-first") {
      await b.setReceiveKey(s.senderIndex, 1, key2);
      await a.setSendKey(s.senderIndex, 1, key2);
    } else {
      await a.setSendKey(s.senderIndex, 1, key2);
      await tick(s.keyDelayMs ?? 300); // the key's way through the signalling
      await b.setReceiveKey(s.senderIndex, 1, key2);
    }
    key2.fill(0);
    out.rotatedKids = (await b.counters()).receiveKids;
    out.afterRotate = await until(
      (p) => p.framesDecoded >= before + Math.max(s.wantDecoded, 30) && rxVideo(p).lastKid === kid1, s.timeoutMs,
    );
    out.kidsAfterOverlap = (await until((p) => p.receiveKids.length === 1, 5000)).receiveKids;
  }
  if (s.leave === true) {
    out.leaveAtMs = performance.now() - start;
    await b.removePublisher(s.senderIndex);
    out.leaveFirstDrop = await until((p) => rxVideo(p).droppedNoKey > 0, 10000);
    const first = rxVideo(out.leaveFirstDrop).droppedNoKey;
    out.afterLeave = await until((p) => rxVideo(p).droppedNoKey >= first + 20, 10000);
  }
  out.audioState = ctx.state;
  out.sender = await a.counters();
  out.receiver = await b.counters();
  out.elapsedMs = performance.now() - start;
  pc1.close();
  pc2.close();
  for (const t of stream.getTracks()) t.stop();
  a.close();
  b.close();
  await ctx.close();
  video.remove();
  audio.remove();
  return out;
}

/**
 * The worker's frame code alone, on this thread: protect then open `n` VP8 delta frames of
 * `size` bytes (and one keyframe in 30); returns ms per frame for each step.
 */
export async function micro(n: number, size: number): Promise<{ protectMs: number; openMs: number }> {
  const sender = new MediaSender();
  const receivers = new MediaReceivers();
  const key = random();
  await sender.setKey(1, 0, key);
  await receivers.setKey(1, 0, key, 0);
  const frames: Uint8Array[] = [];
  for (let i = 0; i < 30; i++) {
    const f = new Uint8Array(i === 0 ? size * 8 : size);
    crypto.getRandomValues(f.subarray(0, Math.min(f.length, 65536)));
    f.set(i === 0 ? [0x50, 0x15, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01] : [0xb1, 0x08, 0x00]);
    frames.push(f);
  }
  let protectMs = 0;
  let openMs = 0;
  for (let i = 0; i < n; i++) {
    const f = frames[i % frames.length] as Uint8Array;
    let t = performance.now();
    const p = await sender.protect("vp8", f);
    protectMs += performance.now() - t;
    t = performance.now();
    const o = await receivers.open(1, "vp8", p as Uint8Array, 0);
    openMs += performance.now() - t;
    if (!o.ok) throw new Error(o.detail);
  }
  return { protectMs: protectMs / n, openMs: openMs / n };
}

declare global {
  interface Window {
    mediaTest: { loopback: typeof loopback; micro: typeof micro; ready: boolean };
  }
}
window.mediaTest = { loopback, micro, ready: true };
document.documentElement.dataset["mediaReady"] = "1";
