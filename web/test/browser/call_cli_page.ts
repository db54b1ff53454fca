/**
 * A test page for a real call without the UI (tests/test_web_call_media_cli.py): served by a real
 * `salon serve` (its CSP), it joins a space from an invite link (Spaces.join), then a
 * conference room with the web CallClient (call.ts) over the real topologies (callTopologies():
 * mesh.ts, sfu.ts with the SFrame worker) and the fake camera and microphone (devices.ts).
 * What it receives of each participant (CallView tracks) is measured: colour, audio level.
 */
import { Spaces } from "../../src/client/spaces.ts";
import type { SpaceClient } from "../../src/client/space.ts";
import { roomName } from "../../src/client/rooms.ts";
import { MemorySlotStore } from "../../src/keystore/store.ts";
import { generateDeviceKey } from "../../src/keystore/vault.ts";
import { CallClient } from "../../src/call/call.ts";
import { LocalDevices } from "../../src/call/devices.ts";
import { callTopologies } from "../../src/call/sfu.ts";
import { shownTracks } from "../../src/call/view.ts";
import type { CallView, TrackKind } from "../../src/call/topology.ts";

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let space: SpaceClient | null = null;
let call: CallClient | null = null;
let devices: LocalDevices | null = null;
let media: ReturnType<typeof callTopologies> | null = null;
const notes: string[] = [];

/**
 * The page renders no tiles, but it looks at every remote camera and screen it gets (seen()), as
 * the UI would show them: it says so (view.ts), or the SFU pauses each slot nobody shows right
 * after its first frames and its track goes and comes back every SLOT_HELD_IDLE_MS.
 */
const SHOWN_PX = 360;
const shown = new Map<string, object>();
setInterval(() => {
  const live = new Set<string>();
  for (const p of call?.view().participants ?? []) {
    if (p.me) continue;
    for (const track of [p.tracks.camera, p.tracks.screen]) {
      if (track === undefined) continue;
      live.add(track.id);
      if (shown.has(track.id)) continue;
      const key = {};
      shown.set(track.id, key);
      shownTracks.set(key, track.id, SHOWN_PX);
    }
  }
  for (const [id, key] of shown) {
    if (live.has(id)) continue;
    shownTracks.delete(key);
    shown.delete(id);
  }
}, 100);

/** Every RTCPeerConnection the page makes, for `inbound()` (what arrived, per receiving mid). */
const pcs: RTCPeerConnection[] = [];
const NativePc = window.RTCPeerConnection;
window.RTCPeerConnection = class extends NativePc {
  constructor(config?: RTCConfiguration) {
    super(config);
    pcs.push(this);
  }
} as typeof RTCPeerConnection;

/** The newest connection's inbound RTP streams that received anything: mid, kind, packets, frames. */
export async function inbound(): Promise<unknown[]> {
  const pc = pcs[pcs.length - 1];
  if (pc === undefined) return [];
  const out: unknown[] = [];
  (await pc.getStats()).forEach((s: Record<string, unknown>) => {
    if (s["type"] !== "inbound-rtp") return;
    out.push({ mid: s["mid"], kind: s["kind"], ssrc: s["ssrc"], packets: s["packetsReceived"], lost: s["packetsLost"],
      frames: s["framesDecoded"], keyframes: s["keyFramesDecoded"], plis: s["pliCount"], firs: s["firCount"], nacks: s["nackCount"] });
  });
  return out;
}

function plain(view: CallView): unknown {
  return {
    phase: view.phase, reason: view.reason, topology: view.topology, encrypted: view.encrypted, code: view.code,
    participants: view.participants.map((p) => ({
      name: p.name, me: p.me, seat: p.seat, muted: p.muted, link: p.link, tracks: Object.keys(p.tracks),
    })),
  };
}

export async function join(link: string, name: string): Promise<string> {
  const spaces = await Spaces.open({ store: new MemorySlotStore(), device: await generateDeviceKey() });
  const result = await spaces.join(link, name);
  space = result.client;
  return result.spaceId;
}

/** Whether this page's member would offer to the space's founder in a mesh (the lower key offers). */
export async function offersToFounder(): Promise<boolean> {
  const client = space;
  if (client === null) throw new Error("join a space first");
  await client.sync();
  const me = [...client.me.memberKey].map((b) => b.toString(16).padStart(2, "0")).join("");
  return me < client.roster().founder;
}

export async function startCall(room: string, opts: { relayOnly?: boolean } = {}): Promise<unknown> {
  const client = space;
  if (client === null) throw new Error("join a space first");
  await client.sync();
  let roomId: string | null = null;
  for (const [id, r] of client.roster().rooms) if ((await roomName(client, r.spec)) === room) roomId = id;
  if (roomId === null) throw new Error(`no room ${room}`);
  devices = new LocalDevices();
  await devices.start({ audio: true, camera: true });
  media = callTopologies();
  call = new CallClient(client, roomId, {
    topologies: media.topologies, media: devices.media, relayOnly: opts.relayOnly ?? false,
    onNote: (text) => notes.push(text),
  });
  devices.onChange((m) => void call?.setLocalMedia(m));
  await call.join();
  return plain(call.view());
}

export function view(): unknown {
  return call === null ? null : plain(call.view());
}

/** Waits until participant `name` shows a `kind` track (and the call has a code), at most `ms`. */
export async function waitTrack(name: string, kind: TrackKind, ms = 30000): Promise<unknown> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const v = call?.view();
    if (v?.participants.some((p) => p.name === name && p.tracks[kind] !== undefined) === true) return plain(v);
    await tick(100);
  }
  const diag = { counters: await counters(), inbound: await inbound() };
  throw new Error(`no ${kind} of ${name}: ${JSON.stringify(call === null ? null : plain(call.view()))} ${notes.slice(-5).join(" | ")} ${JSON.stringify(diag)}`);
}

const audioCtx = new AudioContext();

async function picture(track: MediaStreamTrack): Promise<number[]> {
  const video = document.createElement("video");
  video.muted = true;
  video.autoplay = true;
  video.srcObject = new MediaStream([track]);
  document.body.append(video);
  for (let i = 0; i < 100 && (video.videoWidth === 0 || video.currentTime === 0); i++) await tick(100);
  await tick(500);
  const canvas = document.createElement("canvas");
  canvas.width = 32;
  canvas.height = 24;
  const g = canvas.getContext("2d", { willReadFrequently: true }) as CanvasRenderingContext2D;
  g.drawImage(video, 0, 0, 32, 24);
  const px = g.getImageData(0, 0, 32, 24).data;
  video.remove();
  const channels: number[][] = [[], [], []];
  for (let i = 0; i < px.length; i += 4) for (let c = 0; c < 3; c++) channels[c]?.push(px[i + c] ?? 0);
  return channels.map((ch) => ch.sort((a, b) => a - b)[ch.length >> 1] ?? 0);
}

async function level(track: MediaStreamTrack, ms: number): Promise<number> {
  const audio = document.createElement("audio");
  audio.muted = true;
  audio.srcObject = new MediaStream([track]);
  void audio.play().catch(() => {});
  const analyser = audioCtx.createAnalyser();
  audioCtx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  void audioCtx.resume();
  const samples = new Float32Array(2048);
  let peak = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    analyser.getFloatTimeDomainData(samples);
    for (const v of samples) peak = Math.max(peak, Math.abs(v));
    await tick(50);
  }
  audio.remove();
  return peak;
}

/** The colour (RGB median) or audio peak of what `name` sends us as `kind`. */
export async function seen(name: string, kind: TrackKind): Promise<{ colour?: number[]; peak?: number }> {
  const p = call?.view().participants.find((x) => x.name === name);
  const track = p?.tracks[kind];
  if (track === undefined) throw new Error(`no ${kind} of ${name}`);
  return kind === "audio" ? { peak: await level(track, 2500) } : { colour: await picture(track) };
}

/** Shares a "screen": a canvas of one colour, given to the call like devices.ts would. */
export async function shareScreen(rgb: [number, number, number]): Promise<void> {
  const canvas = document.createElement("canvas");
  canvas.width = 320;
  canvas.height = 240;
  const g = canvas.getContext("2d") as CanvasRenderingContext2D;
  let n = 0;
  setInterval(() => {
    g.fillStyle = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
    g.fillRect(0, 0, 320, 240);
    g.fillStyle = `rgb(${rgb[0]},${rgb[1]},${(rgb[2] + (n++ % 2)) % 256})`;
    g.fillRect(0, 0, 1, 1);
  }, 50);
  const track = canvas.captureStream(15).getVideoTracks()[0] as MediaStreamTrack;
  const d = devices as LocalDevices;
  d.screen = track;
  await call?.setLocalMedia(d.media);
}

export async function counters(): Promise<unknown> {
  return (await media?.mediaKeys()?.counters()) ?? null;
}

export async function leave(): Promise<unknown> {
  const c = await counters();
  await call?.leave();
  devices?.stop();
  media?.close();
  return { counters: c, notes };
}

declare global {
  interface Window {
    callCli: Record<string, unknown>;
  }
}
window.callCli = { join, offersToFounder, startCall, view, waitTrack, seen, shareScreen, counters, inbound, leave, notes: () => notes };
document.documentElement.dataset["callReady"] = "1";
