/**
 * The seams of a call in the browser (mirrors client/topology.py; docs/PROTOCOL.md §13–§15).
 *
 * `CallClient` (call.ts) decides *who* is in the call: it verifies every signed action and
 * signal, holds the media keys (keys.ts), derives seats and the verification code. A `Topology`
 * (mesh.ts: one RTCPeerConnection per pair, DTLS-SRTP end to end; sfu.ts: one
 * RTCPeerConnection to the SFU node, SFrame in the media worker) only moves media: it is told
 * the admitted peers, gets the verified signals addressed to it, sends what it may send, and
 * reports remote tracks and link states to the `MediaSink`. The UI (web/src/ui) reads
 * `CallView` snapshots and calls `CallIntents`; it never sees keys.
 */
import type { SlotView } from "../protocol/conference_wire.ts";
import type { ShownTracks } from "./view.ts";

export type LinkState = "waiting" | "connecting" | "connected" | "failed" | "refused" | "closed";
export type SignalKind = "offer" | "answer" | "media-key";
export type TopologyName = "mesh" | "sfu";
export type TrackKind = "audio" | "camera" | "screen";

/** An admitted participant to exchange media with. */
export interface Peer {
  readonly member: Uint8Array;
  readonly memberHex: string;
  /** Its per-call index (SFrame key ids). */
  readonly index: number;
  /** This pair's current incarnation (changes when either side joins again). */
  readonly link: Uint8Array;
  /** True when *we* make the offer (the lower member key offers). */
  readonly offerer: boolean;
  /** Display name and fingerprint, for messages. */
  readonly label: string;
}

export interface MediaSink {
  /** A remote track of `memberHex` arrived (or was replaced); null when it went away. */
  onTrack(memberHex: string, kind: TrackKind, track: MediaStreamTrack | null): void;
  onLink(memberHex: string, state: LinkState, detail?: string): void;
  /** Our media now leaves encrypted under our key of `epoch` (SFU only). */
  onSendKey?(epoch: number): void;
  /** A fresh connection replaced a lost one after `outageMs` (./retry.ts): to `memberHex`
   * (mesh), or to the SFU (null). */
  onReconnected?(memberHex: string | null, outageMs: number): void;
}

export interface Signaller {
  /** Seal, sign and relay `payload` to `peer` (§14.1). */
  send(peer: Peer, kind: SignalKind, payload: Uint8Array, attempt: number): Promise<void>;
}

/** What the call gives an SFU topology: the way to the call's SFU node and our index. */
export interface SfuChannel {
  readonly myIndex: number;
  /** Hand an SDP offer to the server for the call's SFU node; resolves to its answer. */
  sfuOffer(sdp: string): Promise<string>;
  /** Tell the server how big we show each receiving slot (SfuView, §15.6); rejects if refused. */
  sfuView?(slots: SlotView[]): Promise<void>;
}

/** Our local sources. A null track: nothing of that kind (camera off, no screen shared). */
export interface LocalMedia {
  audio: MediaStreamTrack | null;
  camera: MediaStreamTrack | null;
  screen: MediaStreamTrack | null;
}

/** The media keys a topology needs (SFU: SFrame per sender; mesh: none, DTLS-SRTP). */
export interface SenderKeys {
  /** Our current sending key and its epoch. */
  current(): { epoch: number; key: Uint8Array } | null;
  /** The key `memberHex` sends with now; null while stale (a leave: its fresh key is on its way). */
  currentOf?(memberHex: string): { epoch: number; key: Uint8Array } | null;
  /** Keys usable to decrypt `memberHex`'s media now (current and superseded-in-grace). */
  usable(memberHex: string): ReadonlyArray<{ epoch: number; key: Uint8Array }>;
  /** Called whenever a sender's keys change (ours: memberHex of `me`). */
  onChange(listener: (memberHex: string) => void): () => void;
}

export interface TopologyContext {
  readonly me: Uint8Array;
  readonly keys: SenderKeys;
  readonly sink: MediaSink;
  readonly signaller: Signaller;
  readonly media: LocalMedia;
  readonly sfu: SfuChannel | null;
  /** STUN/TURN servers (GetIceServers, §5.6) and the transport policy. */
  readonly iceServers: RTCIceServer[];
  readonly relayOnly: boolean;
  /** Those admitted before us who have not sealed us their key yet (a newcomer's first peers,
   * §14.1 liveness): the SFU topology waits for them (bounded) before connecting. */
  readonly awaited?: () => Iterable<string>;
  /** How big the page shows each track (default: this page's, ./view.ts `shownTracks`). */
  readonly shown?: ShownTracks;
}

export interface Topology {
  readonly name: TopologyName;
  /** The admitted peers now; connect new ones, drop the others. */
  setPeers(peers: ReadonlyMap<string, Peer>): Promise<void>;
  /** A verified signal from `peer` (opened and checked by the call client). */
  onSignal(peer: Peer, kind: SignalKind, payload: Uint8Array, attempt: number): Promise<void>;
  /** A signal from `memberHex` failed verification: tear the pair down for good (until either
   * side joins again); never fall back to anything unverified. */
  refuse(memberHex: string, reason: string): Promise<void>;
  /** A membership change is about to move our key (§15.5): keep sending under the current one
   * (a join) or send nothing (a leave) until releaseSendKey — our new key is on its way. */
  deferSendKey?(kind: "join" | "leave"): void;
  /** Our new key reached the server for everyone it is for (or we waited long enough). */
  releaseSendKey?(): Promise<void>;
  /** Whether our audio / camera / screen may leave this device (mute, stage role). */
  setSending(sending: { audio: boolean; camera: boolean; screen: boolean }): void;
  /** Our local sources changed (device switch, camera toggled, screen share started). */
  setMedia(media: LocalMedia): Promise<void>;
  close(): Promise<void>;
}

export type TopologyFactory = (ctx: TopologyContext) => Topology;

// ---- what the UI sees and does ----

export type Seat = "lobby" | "listener" | "speaker" | "host";

export interface ParticipantView {
  readonly memberHex: string;
  readonly name: string;
  readonly fingerprint: string;
  readonly me: boolean;
  readonly seat: Seat;
  /** The microphone is off: by the participant themselves, or by a host (`mutedBy`). */
  readonly muted: boolean;
  /** The name of the host whose signed mute holds, or null (muted by themselves, or not). */
  readonly mutedBy: string | null;
  /** No camera picture: off by their own signed "camera-off", or no camera track. */
  readonly cameraOff: boolean;
  readonly hand: boolean;
  readonly speaking: boolean;
  readonly link: LinkState;
  readonly tracks: Partial<Record<TrackKind, MediaStreamTrack>>;
}

export type CallPhase = "idle" | "joining" | "lobby" | "in-call" | "ended" | "removed" | "failed";

export interface CallView {
  readonly phase: CallPhase;
  /** Plain words for phases ended/removed/failed (banned, locked, full, ended by host, …). */
  readonly reason: string;
  readonly roomName: string;
  readonly topology: TopologyName | null;
  readonly encrypted: boolean;
  /** The verification code every participant's screen shows (CLI included), or null. */
  readonly code: string | null;
  readonly locked: boolean;
  readonly participants: readonly ParticipantView[];
  readonly lobby: readonly ParticipantView[];
  readonly mayModerate: boolean;
}

export interface CallIntents {
  setMuted(muted: boolean): Promise<void>;
  setCamera(on: boolean): Promise<void>;
  setHand(up: boolean): Promise<void>;
  shareScreen(on: boolean): Promise<void>;
  leave(): Promise<void>;
  // hosts (signed actions, §13.1)
  admit(memberHex: string): Promise<void>;
  deny(memberHex: string): Promise<void>;
  mute(memberHex: string): Promise<void>;
  muteAll(): Promise<void>;
  kick(memberHex: string, ban: boolean): Promise<void>;
  lock(locked: boolean): Promise<void>;
  promote(memberHex: string): Promise<void>;
  demote(memberHex: string): Promise<void>;
  lowerHand(memberHex: string): Promise<void>;
  end(): Promise<void>;
}
