/**
 * The call part of the bridge (core.ts delegates here): the camera and microphone of the
 * pre-join screen, the devices picked, and — once Join is pressed — the call client's
 * `CallView` snapshots into the store and its `CallIntents` to the screen. Nothing secret
 * enters the store: a CallView holds names, fingerprints, the verification code and tracks.
 */
import type { CallIntents, CallView } from "../call/topology.ts";
import type { SpaceClient } from "../client/space.ts";
import { UsageError } from "../client/context.ts";
import { roomKey, type CallChoices, type CallScreenVM, type DeviceKind, type DeviceVM, type PreviewVM, type Store } from "./state.ts";

/** A joined call as the bridge drives it (the call client of web/src/call/call.ts). */
export interface CallSession {
  view(): CallView;
  onChange(listener: () => void): () => void;
  readonly intents: CallIntents;
  /** Our camera / microphone changed (picked another device). */
  replaceTrack(kind: "audio" | "camera", track: MediaStreamTrack | null): Promise<void>;
  close(): Promise<void>;
}

/** How a call session is started for a room (set by core.ts once the call client is there). */
export type StartCall = (
  client: SpaceClient,
  roomId: string,
  media: { audio: MediaStreamTrack | null; camera: MediaStreamTrack | null },
  choices: CallChoices,
) => Promise<CallSession>;

interface OpenCall {
  readonly slot: string;
  readonly roomId: string;
  preview: PreviewVM;
  audio: MediaStreamTrack | null;
  camera: MediaStreamTrack | null;
  session: CallSession | null;
  off: (() => void) | null;
  error: string | null;
  closed: boolean;
  onDevices: (() => void) | null;
}

const EMPTY_PREVIEW: PreviewVM = {
  starting: true, stream: null, cameras: [], microphones: [], speakers: [], camera: "", microphone: "", speaker: "",
  canPickSpeaker: typeof HTMLMediaElement !== "undefined" && "setSinkId" in HTMLMediaElement.prototype,
  cameraProblem: null, microphoneProblem: null,
};

/** Plain words for a getUserMedia failure of `what` (camera / microphone). */
export function deviceProblem(error: unknown, what: "camera" | "microphone"): string {
  const name = error instanceof DOMException || error instanceof Error ? error.name : "";
  const other = what === "camera" ? "You can still join: others will hear you but not see you." : "You can still join and listen: others won't hear you.";
  switch (name) {
    case "NotAllowedError":
    case "SecurityError":
      return `Salon is not allowed to use your ${what}. Allow it in your browser (the icon next to the address), then press Try again. ${other}`;
    case "NotReadableError":
    case "AbortError":
    case "TrackStartError":
      return `Your ${what} is busy: another app or tab is using it. Close that, then press Try again. ${other}`;
    case "NotFoundError":
    case "OverconstrainedError":
    case "DevicesNotFoundError":
      return `No ${what} was found on this device. ${other}`;
    default:
      return `Your ${what} could not be opened. ${other}`;
  }
}

export class CallBridge {
  private readonly open = new Map<string, OpenCall>();
  /** Set when the browser call client is available; until then Join says calls can't start. */
  startCall: StartCall | null = null;

  constructor(private readonly store: Store, private readonly clientOf: (slot: string) => SpaceClient | null) {}

  private publish(call: OpenCall): void {
    if (call.closed) return;
    const vm: CallScreenVM = { preview: call.preview, view: call.session?.view() ?? null, error: call.error, screen: null };
    this.store.setCall(call.slot, call.roomId, vm);
  }

  openCall(slot: string, roomId: string): void {
    const key = roomKey(slot, roomId);
    if (this.open.has(key)) return;
    const call: OpenCall = {
      slot, roomId, preview: EMPTY_PREVIEW, audio: null, camera: null, session: null, off: null, error: null, closed: false, onDevices: null,
    };
    this.open.set(key, call);
    this.publish(call);
    if (typeof navigator === "undefined" || navigator.mediaDevices === undefined) {
      const words = "This page can't use a camera or microphone (the browser allows it only on secure pages). You can still join and listen.";
      call.preview = { ...call.preview, starting: false, cameraProblem: words, microphoneProblem: words };
      this.publish(call);
      return;
    }
    call.onDevices = () => void this.listDevices(call);
    navigator.mediaDevices.addEventListener("devicechange", call.onDevices);
    void this.startDevices(call);
  }

  closeCall(slot: string, roomId: string): void {
    const key = roomKey(slot, roomId);
    const call = this.open.get(key);
    if (call === undefined) return;
    this.open.delete(key);
    call.closed = true;
    if (call.onDevices !== null) navigator.mediaDevices?.removeEventListener("devicechange", call.onDevices);
    call.off?.();
    const session = call.session;
    call.session = null;
    if (session !== null) void session.intents.leave().catch(() => undefined).finally(() => session.close().catch(() => undefined));
    call.audio?.stop();
    call.camera?.stop();
    this.store.setCall(slot, roomId, null);
  }

  private need(slot: string, roomId: string): OpenCall {
    const call = this.open.get(roomKey(slot, roomId));
    if (call === undefined) throw new UsageError("This call is not open. Open the call room again.");
    return call;
  }

  private async open1(kind: "audio" | "video", deviceId: string): Promise<MediaStreamTrack> {
    const constraint: MediaTrackConstraints | boolean = deviceId === "" ? true : { deviceId: { exact: deviceId } };
    const stream = await navigator.mediaDevices.getUserMedia(kind === "audio" ? { audio: constraint } : { video: constraint });
    const track = kind === "audio" ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
    if (track === undefined) throw new DOMException("no track", "NotFoundError");
    return track;
  }

  private stream(call: OpenCall): MediaStream | null {
    const tracks = [call.audio, call.camera].filter((t): t is MediaStreamTrack => t !== null);
    return tracks.length === 0 ? null : new MediaStream(tracks);
  }

  /** Opens the microphone and the camera separately: one refused or busy leaves the other. */
  private async startDevices(call: OpenCall): Promise<void> {
    call.preview = { ...call.preview, starting: true };
    this.publish(call);
    const [audio, camera] = await Promise.allSettled([
      call.audio ?? this.open1("audio", call.preview.microphone),
      call.camera ?? this.open1("video", call.preview.camera),
    ]);
    if (call.closed) {
      if (audio.status === "fulfilled") audio.value.stop();
      if (camera.status === "fulfilled") camera.value.stop();
      return;
    }
    call.audio = audio.status === "fulfilled" ? audio.value : null;
    call.camera = camera.status === "fulfilled" ? camera.value : null;
    call.preview = {
      ...call.preview,
      starting: false,
      stream: this.stream(call),
      microphoneProblem: audio.status === "rejected" ? deviceProblem(audio.reason, "microphone") : null,
      cameraProblem: camera.status === "rejected" ? deviceProblem(camera.reason, "camera") : null,
    };
    for (const track of [call.audio, call.camera]) track?.addEventListener("ended", () => this.lost(call, track));
    await this.listDevices(call);
  }

  /** A device went away (unplugged, taken by the system): say so, keep the call. */
  private lost(call: OpenCall, track: MediaStreamTrack): void {
    if (call.closed) return;
    if (call.audio === track) {
      call.audio = null;
      call.preview = { ...call.preview, microphoneProblem: "Your microphone stopped (it may have been unplugged). Pick another one or press Try again." };
      void call.session?.replaceTrack("audio", null);
    } else if (call.camera === track) {
      call.camera = null;
      call.preview = { ...call.preview, cameraProblem: "Your camera stopped (it may have been unplugged). Pick another one or press Try again." };
      void call.session?.replaceTrack("camera", null);
    } else {
      return;
    }
    call.preview = { ...call.preview, stream: this.stream(call) };
    this.publish(call);
  }

  private async listDevices(call: OpenCall): Promise<void> {
    let devices: MediaDeviceInfo[] = [];
    try {
      devices = await navigator.mediaDevices.enumerateDevices();
    } catch {
      // No list: the pickers stay empty and the defaults are used.
    }
    if (call.closed) return;
    const of = (kind: MediaDeviceKind, word: string): DeviceVM[] => {
      const found = devices.filter((d) => d.kind === kind && d.deviceId !== "");
      return found.map((d, i) => ({ id: d.deviceId, label: d.label || `${word} ${i + 1}` }));
    };
    const inUse = (track: MediaStreamTrack | null): string => track?.getSettings().deviceId ?? "";
    const cameras = of("videoinput", "Camera");
    const microphones = of("audioinput", "Microphone");
    const speakers = call.preview.canPickSpeaker ? of("audiooutput", "Speaker") : [];
    // The picker shows what is used: the device of the open track, else the browser's first.
    const shown = (list: DeviceVM[], id: string): string => (list.some((d) => d.id === id) ? id : (list[0]?.id ?? ""));
    call.preview = {
      ...call.preview,
      cameras,
      microphones,
      speakers,
      camera: shown(cameras, inUse(call.camera) || call.preview.camera),
      microphone: shown(microphones, inUse(call.audio) || call.preview.microphone),
      speaker: shown(speakers, call.preview.speaker),
    };
    this.publish(call);
  }

  async retryDevices(slot: string, roomId: string): Promise<void> {
    await this.startDevices(this.need(slot, roomId));
  }

  async pickDevice(slot: string, roomId: string, kind: DeviceKind, id: string): Promise<void> {
    const call = this.need(slot, roomId);
    if (kind === "speaker") {
      call.preview = { ...call.preview, speaker: id };
      this.publish(call);
      return;
    }
    const which = kind === "camera" ? "camera" : "microphone";
    const old = kind === "camera" ? call.camera : call.audio;
    old?.stop();
    let track: MediaStreamTrack | null = null;
    let problem: string | null = null;
    try {
      track = await this.open1(kind === "camera" ? "video" : "audio", id);
    } catch (err) {
      problem = deviceProblem(err, which);
    }
    if (call.closed) {
      track?.stop();
      return;
    }
    if (kind === "camera") call.camera = track;
    else call.audio = track;
    track?.addEventListener("ended", () => this.lost(call, track));
    call.preview = {
      ...call.preview,
      stream: this.stream(call),
      ...(kind === "camera" ? { camera: id, cameraProblem: problem } : { microphone: id, microphoneProblem: problem }),
    };
    this.publish(call);
    await call.session?.replaceTrack(kind === "camera" ? "camera" : "audio", track);
  }

  async joinCall(slot: string, roomId: string, choices: CallChoices): Promise<void> {
    const call = this.need(slot, roomId);
    const client = this.clientOf(slot);
    if (client === null) throw new UsageError("This space is still opening. Try again in a moment.");
    if (this.startCall === null) throw new UsageError("Calls can't be joined from this browser yet. Join from the Salon app on a computer for now.");
    call.error = null;
    this.publish(call);
    const session = await this.startCall(client, roomId, { audio: call.audio, camera: call.camera }, choices);
    if (call.closed) {
      await session.intents.leave().catch(() => undefined);
      await session.close();
      return;
    }
    call.session = session;
    call.off = session.onChange(() => this.publish(call));
    this.publish(call);
  }

  callIntents(slot: string, roomId: string): CallIntents | null {
    return this.open.get(roomKey(slot, roomId))?.session?.intents ?? null;
  }
}
