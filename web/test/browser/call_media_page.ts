/**
 * A test page for the call media plumbing (tests/test_web_call_media.py): two participants in
 * one page, each with its own `MeshTopology` (src/call/mesh.ts), joined by an in-page
 * `Signaller` that hands each signal to the other side's `onSignal` (the sealing is the call
 * client's, tested elsewhere). Alice's sources come from `LocalDevices` (src/call/devices.ts:
 * Chromium's fake camera, a Y4M of a known colour, and fake microphone); Bob's from canvases
 * of other colours and a WebAudio oscillator. What each side's `MediaSink` receives is kept and
 * measured: decoded colour, audio level, packets arriving.
 */
import { DeviceError, LocalDevices, listDevices, openDevices, setSpeaker } from "../../src/call/devices.ts";
import { MeshTopology } from "../../src/call/mesh.ts";
import { SfuTopology, sframeWorkerUrl } from "../../src/call/sfu.ts";
import { MediaKeys } from "../../src/media/media_keys.ts";
import type {
  LinkState, LocalMedia, MediaSink, Peer, SenderKeys, SignalKind, Signaller, TopologyContext, TrackKind,
} from "../../src/call/topology.ts";

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const hex = (b: Uint8Array): string => Array.from(b, (v) => v.toString(16).padStart(2, "0")).join("");

class Sink implements MediaSink {
  readonly tracks = new Map<string, MediaStreamTrack>(); // `${member}/${kind}`
  readonly links = new Map<string, LinkState>();
  readonly details: string[] = [];
  readonly events: string[] = [];
  onTrack(memberHex: string, kind: TrackKind, track: MediaStreamTrack | null): void {
    this.events.push(`${kind}:${track === null ? "gone" : "track"}`);
    if (track === null) this.tracks.delete(`${memberHex}/${kind}`);
    else this.tracks.set(`${memberHex}/${kind}`, track);
  }
  onLink(memberHex: string, state: LinkState, detail?: string): void {
    this.links.set(memberHex, state);
    if (detail !== undefined) this.details.push(`${state}: ${detail}`);
  }
}

const noKeys: SenderKeys = { current: () => null, usable: () => [], onChange: () => () => {} };

interface Side {
  name: string;
  member: Uint8Array;
  sink: Sink;
  topology: MeshTopology;
  media: LocalMedia;
}

/** A canvas of one colour as a video track (repainted so frames keep coming). */
function colourTrack(rgb: [number, number, number]): MediaStreamTrack {
  const canvas = document.createElement("canvas");
  canvas.width = 320;
  canvas.height = 240;
  const g = canvas.getContext("2d") as CanvasRenderingContext2D;
  let n = 0;
  const paint = (): void => {
    g.fillStyle = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
    g.fillRect(0, 0, canvas.width, canvas.height);
    g.fillStyle = `rgb(${rgb[0]},${rgb[1]},${(rgb[2] + (n++ % 2)) % 256})`; // a changing pixel: frames keep flowing
    g.fillRect(0, 0, 1, 1);
  };
  paint();
  setInterval(paint, 50);
  return canvas.captureStream(20).getVideoTracks()[0] as MediaStreamTrack;
}

const audioCtx = new AudioContext();

function toneTrack(): MediaStreamTrack {
  const osc = audioCtx.createOscillator();
  osc.frequency.value = 440;
  const dest = audioCtx.createMediaStreamDestination();
  osc.connect(dest);
  osc.start();
  return dest.stream.getAudioTracks()[0] as MediaStreamTrack;
}

let alice: Side | null = null;
let bob: Side | null = null;
let aliceDevices: LocalDevices | null = null;

function peerOf(me: Side, other: Side, link: Uint8Array): Peer {
  return {
    member: other.member,
    memberHex: hex(other.member),
    index: other === alice ? 1 : 2,
    link,
    offerer: hex(me.member) < hex(other.member),
    label: other.name,
  };
}

/** Sets up both sides and connects them; resolves once both links say "connected". */
export async function start(opts: { relayOnly?: boolean; iceServers?: RTCIceServer[] } = {}): Promise<{ links: string[]; details: string[] }> {
  aliceDevices = new LocalDevices();
  await aliceDevices.start({ audio: true, camera: true });
  const bobMedia: LocalMedia = { audio: toneTrack(), camera: colourTrack([20, 60, 220]), screen: null };
  const link = crypto.getRandomValues(new Uint8Array(16));
  const sides: Side[] = [];
  const signaller = (from: () => Side, to: () => Side): Signaller => ({
    async send(_peer: Peer, kind: SignalKind, payload: Uint8Array, attempt: number): Promise<void> {
      const target = to();
      const peer = peerOf(target, from(), link);
      setTimeout(() => void target.topology.onSignal(peer, kind, payload, attempt), 0);
    },
  });
  const make = (name: string, media: LocalMedia, sig: Signaller): Side => {
    const member = crypto.getRandomValues(new Uint8Array(32));
    const sink = new Sink();
    const ctx: TopologyContext = {
      me: member, keys: noKeys, sink, signaller: sig, media, sfu: null,
      iceServers: opts.iceServers ?? [], relayOnly: opts.relayOnly ?? false,
    };
    const side: Side = { name, member, sink, topology: new MeshTopology(ctx), media };
    sides.push(side);
    return side;
  };
  alice = make("Alice", aliceDevices.media, signaller(() => alice as Side, () => bob as Side));
  bob = make("Bob", bobMedia, signaller(() => bob as Side, () => alice as Side));
  aliceDevices.onChange((media) => void alice?.topology.setMedia(media));
  for (const s of [alice, bob]) s.topology.setSending({ audio: true, camera: true, screen: true });
  await alice.topology.setPeers(new Map([[hex(bob.member), peerOf(alice, bob, link)]]));
  await bob.topology.setPeers(new Map([[hex(alice.member), peerOf(bob, alice, link)]]));
  const end = performance.now() + 30000;
  while (performance.now() < end) {
    const states = sides.map((s) => [...s.sink.links.values()].join(","));
    if (states.every((st) => st === "connected") || states.some((st) => st === "failed" || st === "refused")) break;
    await tick(100);
  }
  return { links: sides.map((s) => [...s.sink.links.values()].join(",")), details: sides.flatMap((s) => s.sink.details) };
}

function side(name: string): Side {
  const s = name === "alice" ? alice : bob;
  if (s === null) throw new Error("not started");
  return s;
}
const other = (name: string): Side => side(name === "alice" ? "bob" : "alice");

interface Seen {
  has: boolean;
  colour: number[];
  framesDecoded: number;
  audioPeak: number;
  packets: number;
}

const videos = new Map<MediaStreamTrack, HTMLVideoElement>();

function picture(track: MediaStreamTrack): Promise<number[]> {
  let video = videos.get(track);
  if (video === undefined) {
    video = document.createElement("video");
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    video.srcObject = new MediaStream([track]);
    document.body.append(video);
    videos.set(track, video);
  }
  const v = video;
  return (async () => {
    for (let i = 0; i < 50 && v.videoWidth === 0; i++) await tick(100);
    if (v.videoWidth === 0) return [];
    const canvas = document.createElement("canvas");
    canvas.width = 32;
    canvas.height = 24;
    const g = canvas.getContext("2d", { willReadFrequently: true }) as CanvasRenderingContext2D;
    g.drawImage(v, 0, 0, 32, 24);
    const px = g.getImageData(0, 0, 32, 24).data;
    // the per-channel median: a test pattern's text and bar do not move it
    const channels: number[][] = [[], [], []];
    for (let i = 0; i < px.length; i += 4) for (let c = 0; c < 3; c++) channels[c]?.push(px[i + c] ?? 0);
    return channels.map((ch) => ch.sort((a, b) => a - b)[ch.length >> 1] ?? 0);
  })();
}

async function level(track: MediaStreamTrack, ms: number): Promise<number> {
  const audio = document.createElement("audio");
  audio.muted = true;
  audio.srcObject = new MediaStream([track]); // Chromium feeds WebAudio from a remote track only while it plays somewhere
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

/** Inbound stats of `name`'s pair, per section index: packets received and frames decoded. */
async function inbound(name: string): Promise<Record<string, { packets: number; frames: number }>> {
  const s = side(name);
  const pc = s.topology.connection(hex(other(name).member));
  const out: Record<string, { packets: number; frames: number }> = {};
  if (pc === null) return out;
  const kinds = ["audio", "camera", "screen"];
  await Promise.all(
    pc.getTransceivers().map(async (t, i) => {
      (await t.receiver.getStats()).forEach((r: { type: string; packetsReceived?: number; framesDecoded?: number }) => {
        if (r.type === "inbound-rtp") out[kinds[i] ?? `section-${i}`] = { packets: r.packetsReceived ?? 0, frames: r.framesDecoded ?? 0 };
      });
    }),
  );
  return out;
}

/** What `name` sees of the other side's `kind` now (and audio/packets over `ms`). */
export async function seen(name: string, kind: TrackKind, ms = 1500): Promise<Seen> {
  const s = side(name);
  const track = s.sink.tracks.get(`${hex(other(name).member)}/${kind}`) ?? null;
  const before = (await inbound(name))[kind] ?? { packets: 0, frames: 0 };
  const out: Seen = { has: track !== null, colour: [], framesDecoded: 0, audioPeak: 0, packets: 0 };
  if (track !== null && kind === "audio") out.audioPeak = await level(track, ms);
  else await tick(ms);
  if (track !== null && kind !== "audio") out.colour = await picture(track);
  const after = (await inbound(name))[kind] ?? { packets: 0, frames: 0 };
  out.packets = after.packets - before.packets;
  out.framesDecoded = after.frames;
  return out;
}

/** Waits until `name` has the other's `kind` track (or not), at most `ms`. */
export async function waitTrack(name: string, kind: TrackKind, present: boolean, ms = 20000): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (side(name).sink.tracks.has(`${hex(other(name).member)}/${kind}`) === present) return true;
    await tick(100);
  }
  return false;
}

/** The candidate types of `name`'s selected pair (relay-only: both "relay"). */
export async function selectedPair(name: string): Promise<{ local: string; remote: string }> {
  const pc = side(name).topology.connection(hex(other(name).member));
  const out = { local: "", remote: "" };
  if (pc === null) return out;
  const stats = await pc.getStats();
  const all = new Map<string, Record<string, unknown>>();
  stats.forEach((r: Record<string, unknown>) => all.set(r["id"] as string, r));
  for (const r of all.values()) {
    if (r["type"] !== "transport" || typeof r["selectedCandidatePairId"] !== "string") continue;
    const pair = all.get(r["selectedCandidatePairId"]);
    out.local = String(all.get(String(pair?.["localCandidateId"]))?.["candidateType"] ?? "");
    out.remote = String(all.get(String(pair?.["remoteCandidateId"]))?.["candidateType"] ?? "");
  }
  return out;
}

export function setSending(name: string, sending: { audio: boolean; camera: boolean; screen: boolean }): void {
  side(name).topology.setSending(sending);
}

/** Alice's camera off or on (devices.ts stops or reopens it; the topology gets the new sources). */
export async function aliceCamera(on: boolean): Promise<boolean> {
  await aliceDevices?.setCamera(on);
  await tick(50);
  return aliceDevices?.camera !== null;
}

/** A button that makes Alice share her screen through devices.ts (getDisplayMedia needs a click). */
export function aliceScreenButton(): void {
  const button = document.createElement("button");
  button.id = "alice-screen";
  button.textContent = "Share screen";
  button.onclick = () => {
    window.callTest["screenResult"] = aliceDevices?.shareScreen(true).then(
      () => aliceDevices?.screen?.readyState ?? "none",
      (err: unknown) => (err instanceof DeviceError ? `${err.problem}: ${err.message}` : String(err)),
    );
  };
  document.body.append(button);
}

export async function aliceStopScreen(): Promise<boolean> {
  await aliceDevices?.shareScreen(false);
  return aliceDevices?.screen === null;
}

/** Bob shares a "screen" (a canvas of another colour) or stops. */
export async function bobScreen(on: boolean): Promise<void> {
  const b = side("bob");
  if (b.media.screen !== null) b.media.screen.stop();
  b.media.screen = on ? colourTrack([30, 200, 40]) : null;
  await b.topology.setMedia(b.media);
}

export function sinkEvents(name: string): { events: string[]; details: string[]; links: string[] } {
  const s = side(name);
  return { events: s.sink.events, details: s.sink.details, links: [...s.sink.links.values()] };
}

/** devices.ts: what opening the camera and microphone gives here (a DeviceError's plain words). */
export async function tryDevices(): Promise<{ ok: boolean; problem: string; message: string; lists: unknown }> {
  try {
    const got = await openDevices({ audio: true, camera: true });
    got.audio?.stop();
    got.camera?.stop();
    return { ok: true, problem: "", message: "", lists: await listDevices() };
  } catch (err) {
    if (err instanceof DeviceError) return { ok: false, problem: err.problem, message: err.message, lists: await listDevices() };
    return { ok: false, problem: "not a DeviceError", message: String(err), lists: null };
  }
}

// ---- the SFU: this page is one participant, the test's Python SfuSession another ----------

let sfu: { topology: SfuTopology; sink: Sink; keys: MediaKeys; devices: LocalDevices } | null = null;
const unhex = (h: string): Uint8Array => Uint8Array.from(h.match(/../g) ?? [], (b) => parseInt(b, 16));

export interface SfuSetup {
  me: string;
  myIndex: number;
  myKey: string;
  peers: Array<{ member: string; index: number; key: string; label: string }>;
  offerUrl: string;
}

/** Joins the SFU node through SfuTopology: our camera and microphone (LocalDevices), keys given. */
export async function sfuStart(setup: SfuSetup): Promise<{ state: string; details: string[] }> {
  const devices = new LocalDevices();
  await devices.start({ audio: true, camera: true });
  const keys = MediaKeys.start(sframeWorkerUrl());
  const sink = new Sink();
  const listeners = new Set<(m: string) => void>();
  const senderKeys: SenderKeys = {
    current: () => ({ epoch: 0, key: unhex(setup.myKey) }),
    usable: (m) => {
      const p = setup.peers.find((x) => x.member === m);
      return p === undefined ? [] : [{ epoch: 0, key: unhex(p.key) }];
    },
    onChange: (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
  };
  const ctx: TopologyContext = {
    me: unhex(setup.me), keys: senderKeys, sink, media: devices.media, iceServers: [], relayOnly: false,
    signaller: { send: async () => {} },
    sfu: {
      myIndex: setup.myIndex,
      async sfuOffer(sdp: string): Promise<string> {
        const r = await fetch(setup.offerUrl, { method: "POST", body: sdp });
        if (!r.ok) throw new Error(`the SFU refused the offer: ${await r.text()}`);
        return r.text();
      },
    },
  };
  const topology = new SfuTopology(ctx, keys);
  sfu = { topology, sink, keys, devices };
  devices.onChange((media) => void topology.setMedia(media));
  topology.setSending({ audio: true, camera: true, screen: true });
  await topology.setPeers(new Map(setup.peers.map((p) => [p.member, {
    member: unhex(p.member), memberHex: p.member, index: p.index, link: new Uint8Array(16), offerer: false, label: p.label,
  }])));
  const end = performance.now() + 30000;
  while (performance.now() < end && topology.state !== "connected") await tick(100);
  return { state: topology.state, details: sink.details };
}

/** What the page gets from `member` through the SFU: tracks by kind, colour, audio, worker counters. */
export async function sfuSeen(member: string, ms = 1500): Promise<Record<string, unknown>> {
  if (sfu === null) throw new Error("not started");
  const out: Record<string, unknown> = { slots: sfu.topology.slotMembers(), state: sfu.topology.state };
  for (const kind of ["camera", "screen", "audio"] as const) {
    const track = sfu.sink.tracks.get(`${member}/${kind}`);
    if (track === undefined) continue;
    out[kind] = kind === "audio" ? { peak: await level(track, ms) } : { colour: await picture(track) };
  }
  out["counters"] = await sfu.keys.counters();
  out["events"] = sfu.sink.events;
  return out;
}

export async function sfuWaitTrack(member: string, kind: TrackKind, ms = 20000): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (sfu?.sink.tracks.has(`${member}/${kind}`) === true) return true;
    await tick(100);
  }
  return false;
}

/** Shares a "screen" (a canvas of one colour) on the SFU. */
export async function sfuScreen(on: boolean): Promise<void> {
  if (sfu === null) throw new Error("not started");
  const media = { ...sfu.devices.media, screen: on ? colourTrack([30, 200, 40]) : null };
  await sfu.topology.setMedia(media);
}

/** The server's SfuReconnect: the topology connects to the node again (same worker, counters go on). */
export async function sfuReconnect(): Promise<{ state: string; connects: number; reconnects: number }> {
  if (sfu === null) throw new Error("not started");
  await sfu.topology.reconnect("the test says so");
  const end = performance.now() + 30000;
  while (performance.now() < end && sfu.topology.state !== "connected") await tick(100);
  return { state: sfu.topology.state, ...sfu.topology.counters };
}

export async function sfuClose(): Promise<unknown> {
  const counters = await sfu?.keys.counters();
  await sfu?.topology.close();
  sfu?.devices.stop();
  sfu?.keys.close();
  return counters;
}

export async function close(): Promise<void> {
  await alice?.topology.close();
  await bob?.topology.close();
  aliceDevices?.stop();
}

declare global {
  interface Window {
    callTest: Record<string, unknown>;
  }
}
/** devices.ts speaker choice on a media element: the default speaker, then a made-up one. */
export async function speaker(): Promise<{ chosen: boolean; unknown: string }> {
  const el = document.createElement("audio");
  const chosen = await setSpeaker(el, "");
  let unknown = "";
  try {
    await setSpeaker(el, "no-such-speaker");
  } catch (err) {
    unknown = err instanceof DeviceError ? err.problem : String(err);
  }
  return { chosen, unknown };
}

window.callTest = { speaker, sfuReconnect, aliceScreenButton, aliceStopScreen, selectedPair, sfuStart, sfuSeen, sfuWaitTrack, sfuScreen, sfuClose, start, seen, waitTrack, setSending, aliceCamera, bobScreen, sinkEvents, tryDevices, close, listDevices };
document.documentElement.dataset["callReady"] = "1";
