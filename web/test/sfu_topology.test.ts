// web/src/call/sfu.ts without a browser: which keys reach the SFrame worker (§15.5), which
// members the topology accepts (§15.5 index binding), the offer marking (§15.6). The worker is
// a recording stand-in and there is no WebRTC here (the connection attempts fail quietly); the
// media path itself is tested in real browsers (tests/test_web_call_sfu_media.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import { CAMERA_LAYERS, SfuTopology, cameraLayers, markScreenSections, simulcastLayerCount } from "../src/call/sfu.ts";
import type { MediaKeys } from "../src/media/media_keys.ts";
import type { LinkState, MediaSink, Peer, SenderKeys, TopologyContext, TrackKind } from "../src/call/topology.ts";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const member = (n: number): Uint8Array => new Uint8Array(32).fill(n);
const key = (n: number): Uint8Array => new Uint8Array(32).fill(n);

class Recorder {
  readonly calls: string[] = [];
  async setSendKey(index: number, epoch: number, k: Uint8Array): Promise<number> {
    this.calls.push(`send ${index}/${epoch} ${k[0]}`);
    return index * 65536 + epoch;
  }
  async setReceiveKey(index: number, epoch: number, k: Uint8Array): Promise<number> {
    this.calls.push(`receive ${index}/${epoch} ${k[0]}`);
    return index * 65536 + epoch;
  }
  async supersede(index: number): Promise<void> {
    this.calls.push(`supersede ${index}`);
  }
  async removePublisher(index: number): Promise<void> {
    this.calls.push(`remove ${index}`);
  }
  attachSender(): void {}
  attachReceiver(): void {}
  async counters(): Promise<{ tracks: Record<string, never>; sendKid: null; receiveKids: never[] }> {
    return { tracks: {}, sendKid: null, receiveKids: [] };
  }
}

class Sink implements MediaSink {
  readonly links: string[] = [];
  readonly sendKeys: number[] = [];
  onTrack(_m: string, _k: TrackKind, _t: MediaStreamTrack | null): void {}
  onLink(m: string, state: LinkState, detail?: string): void {
    this.links.push(`${m.slice(0, 2)} ${state}${detail === undefined ? "" : `: ${detail}`}`);
  }
  onSendKey(epoch: number): void {
    this.sendKeys.push(epoch);
  }
}

function setup(): {
  topology: SfuTopology; worker: Recorder; sink: Sink; keys: Map<string, Array<{ epoch: number; key: Uint8Array }>>;
  own: { epoch: number; key: Uint8Array }; change: (m: string) => void;
} {
  const worker = new Recorder();
  const sink = new Sink();
  const keys = new Map<string, Array<{ epoch: number; key: Uint8Array }>>();
  const own = { epoch: 0, key: key(1) };
  const listeners = new Set<(m: string) => void>();
  const senderKeys: SenderKeys = {
    current: () => ({ ...own }),
    usable: (m) => keys.get(m) ?? [],
    onChange: (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
  };
  const ctx: TopologyContext = {
    me: member(1), keys: senderKeys, sink, signaller: { send: async () => {} },
    media: { audio: null, camera: null, screen: null },
    sfu: { myIndex: 1, sfuOffer: async () => { throw new Error("no SFU here"); } },
    iceServers: [], relayOnly: false,
  };
  const topology = new SfuTopology(ctx, worker as unknown as MediaKeys);
  return { topology, worker, sink, keys, own, change: (m) => listeners.forEach((l) => l(m)) };
}

const peer = (n: number, index: number): [string, Peer] => [
  hex(member(n)), { member: member(n), memberHex: hex(member(n)), index, link: new Uint8Array(16), offerer: false, label: `p${n}` },
];
const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

test("keys reach the worker: ours to send, each peer's to receive, updates on change", async () => {
  const s = setup();
  (globalThis as { RTCPeerConnection?: unknown }).RTCPeerConnection = class {
    constructor() {
      throw new Error("no WebRTC in this test");
    }
  };
  s.keys.set(hex(member(2)), [{ epoch: 1, key: key(21) }, { epoch: 0, key: key(20) }]);
  await tick();
  await s.topology.setPeers(new Map([peer(2, 2)]));
  assert.deepEqual(s.worker.calls, ["send 1/0 1", "receive 2/0 20", "receive 2/1 21"], "oldest first, current last");
  assert.deepEqual(s.sink.sendKeys, [0]);

  // Our key moves on (a rekey): the worker sends under the new epoch at once.
  s.own.epoch = 1;
  s.own.key = key(2);
  s.change(hex(member(1)));
  await tick();
  assert.equal(s.worker.calls.at(-1), "send 1/1 2");
  assert.deepEqual(s.sink.sendKeys, [0, 1]);

  // A peer's new key.
  s.keys.set(hex(member(2)), [{ epoch: 2, key: key(22) }, { epoch: 1, key: key(21) }]);
  s.change(hex(member(2)));
  await tick();
  assert.equal(s.worker.calls.at(-1), "receive 2/2 22");

  // Carol joins, then leaves: her keys go after the overlap, Bob's current one only overlaps.
  s.keys.set(hex(member(3)), [{ epoch: 0, key: key(30) }]);
  await s.topology.setPeers(new Map([peer(2, 2), peer(3, 3)]));
  assert.equal(s.worker.calls.at(-1), "receive 3/0 30");
  await s.topology.setPeers(new Map([peer(2, 2)]));
  assert.deepEqual(s.worker.calls.slice(-2), ["remove 3", "supersede 2"]);
  assert.ok(s.sink.links.includes("03 closed"));

  // Carol back under a new index: a new publisher; her old index stays hers.
  await s.topology.setPeers(new Map([peer(2, 2), peer(3, 4)]));
  assert.equal(s.worker.calls.at(-1), "receive 4/0 30");
  // A server giving Bob's index to Dave: refused, no key of his installed.
  s.keys.set(hex(member(4)), [{ epoch: 0, key: key(40) }]);
  const before = s.worker.calls.length;
  await s.topology.setPeers(new Map([peer(2, 2), peer(3, 4), peer(4, 2)]));
  assert.equal(s.worker.calls.length, before, "nothing installed for Dave");
  assert.ok(s.sink.links.some((l) => l.startsWith("04 refused: the server gave them sender index 2")), s.sink.links.join("; "));
  await s.topology.close();
});

test("the screen sections of an offer are marked a=content:slides after their a=mid", () => {
  const sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n";
  const marked = markScreenSections(sdp, new Set(["2"]));
  assert.equal(marked, "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=content:slides\r\n");
});

test("the camera's simulcast layers go lowest first (the node relies on it, §15.6), at most 3", () => {
  assert.deepEqual(CAMERA_LAYERS.map((e) => e.rid), ["q", "h", "f"]);
  for (let i = 1; i < CAMERA_LAYERS.length; i++) {
    const [lower, upper] = [CAMERA_LAYERS[i - 1], CAMERA_LAYERS[i]];
    assert.ok((lower?.scaleResolutionDownBy ?? 1) > (upper?.scaleResolutionDownBy ?? 1));
    assert.ok((lower?.maxBitrate ?? 0) < (upper?.maxBitrate ?? 0));
  }
  assert.equal(CAMERA_LAYERS.at(-1)?.scaleResolutionDownBy, 1);
  for (const e of CAMERA_LAYERS) assert.match(e.rid ?? "", /^[A-Za-z0-9]{1,16}$/);
});

test("the camera's layers fit its capture: the top one at full size, as many as Chromium sends", () => {
  assert.deepEqual(cameraLayers(1280, 720), CAMERA_LAYERS.map((e) => ({ ...e, active: true })));
  assert.deepEqual([simulcastLayerCount(1920, 1080), simulcastLayerCount(960, 540), simulcastLayerCount(640, 480)], [3, 3, 2]);
  assert.deepEqual([simulcastLayerCount(640, 360), simulcastLayerCount(480, 270), simulcastLayerCount(320, 240)], [2, 2, 1]);
  const vga = cameraLayers(640, 480);
  assert.deepEqual(vga.map((e) => [e.rid, e.active, e.scaleResolutionDownBy]), [["q", true, 2], ["h", true, 1], ["f", false, 1]]);
  assert.deepEqual(vga.map((e) => e.maxBitrate), [250_000, 900_000, 1_500_000]);
  const tiny = cameraLayers(160, 120);
  assert.deepEqual(tiny.map((e) => [e.active, e.scaleResolutionDownBy]), [[true, 1], [false, 2], [false, 1]]);
});
