/**
 * Cameras, microphones, speakers and the shared screen of this browser, for a call: opening
 * them (with plain-word errors a person can act on), listing them, switching without a
 * renegotiation, the local preview and speaker selection (`setSinkId` where the browser has it).
 *
 *   const local = new LocalDevices();
 *   await local.start({ audio: true, camera: true });   // throws DeviceError (plain words)
 *   video.srcObject = local.preview;                     // the self-view (camera only)
 *   local.onChange((media) => topology.setMedia(media)); // LocalMedia for the topology
 *   await local.useCamera(deviceId); await local.setCamera(false);
 *   await local.shareScreen(true);                       // the browser's picker; "ended" → off
 *   await setSpeaker(audioElement, deviceId);            // false where not supported
 */
import type { LocalMedia } from "./topology.ts";

export type DeviceKind = "camera" | "microphone" | "speaker";
export type DeviceProblem = "denied" | "busy" | "missing" | "unsupported" | "failed";

/** What went wrong with a device, in words for the person in front of it. */
export class DeviceError extends Error {
  override name = "DeviceError";
  constructor(readonly problem: DeviceProblem, readonly device: string, message: string) {
    super(message);
  }
}

/** Maps a getUserMedia/getDisplayMedia error to a DeviceError. `what`: "camera", "microphone", "camera and microphone", "screen". */
export function deviceError(err: unknown, what: string): DeviceError {
  if (err instanceof DeviceError) return err;
  const name = err instanceof Error || err instanceof DOMException ? err.name : "";
  const plural = what.includes(" and ");
  const it = plural ? "them" : "it";
  switch (name) {
    case "NotAllowedError":
    case "SecurityError":
      if (what === "screen") return new DeviceError("denied", what, "Screen sharing was not allowed. Nothing of your screen is shared.");
      return new DeviceError(
        "denied",
        what,
        `Permission to use your ${what} was denied. Allow ${it} for this site in the browser's address bar, then try again.`,
      );
    case "NotReadableError":
    case "AbortError":
    case "TrackStartError":
      return new DeviceError(
        "busy",
        what,
        `Your ${what} ${plural ? "are" : "is"} busy or could not be started: close other apps or tabs using ${it}, then try again.`,
      );
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return new DeviceError("missing", what, `No ${what.replace(" and ", " or ")} was found. Connect one, or join without ${it}.`);
    case "NotSupportedError":
    case "TypeError":
      return new DeviceError("unsupported", what, `This browser cannot use a ${what} here (a secure https page is needed).`);
    default:
      return new DeviceError("failed", what, `Your ${what} could not be started${err instanceof Error && err.message ? `: ${err.message}` : "."}`);
  }
}

function mediaDevices(what: string): MediaDevices {
  if (typeof navigator === "undefined" || navigator.mediaDevices === undefined) {
    throw new DeviceError("unsupported", what, `This browser cannot use a ${what} here (a secure https page is needed).`);
  }
  return navigator.mediaDevices;
}

/** A camera as opened: one encoding to each peer of a mesh call. */
const VIDEO: MediaTrackConstraints = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };
/**
 * A camera publishing simulcast to the SFU (sfu.ts CAMERA_LAYERS): 1280x720, because Chromium
 * sends only as many layers as the capture allows — 3 from 960x540 up, 2 at 640x360, 1 below.
 */
export const SFU_VIDEO: MediaTrackConstraints = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

/**
 * Re-opens a running camera at the SFU's capture size (`forSfu`) or back at the mesh one. A
 * camera that cannot (a fixed-size one) keeps what it had: the SFU then gets fewer layers.
 */
export async function fitCamera(track: MediaStreamTrack, forSfu: boolean): Promise<void> {
  if (track.readyState !== "live") return;
  try {
    await track.applyConstraints(forSfu ? SFU_VIDEO : VIDEO);
  } catch {
    // OverconstrainedError cannot happen with ideal values; anything else: keep the old size.
  }
}
const AUDIO: MediaTrackConstraints = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/** Opens a microphone (`deviceId`, or the default). */
export async function openMicrophone(deviceId?: string): Promise<MediaStreamTrack> {
  try {
    const audio = deviceId === undefined ? AUDIO : { ...AUDIO, deviceId: { exact: deviceId } };
    const stream = await mediaDevices("microphone").getUserMedia({ audio });
    return stream.getAudioTracks()[0] as MediaStreamTrack;
  } catch (err) {
    throw deviceError(err, "microphone");
  }
}

/** Opens a camera (`deviceId`, or the default). */
export async function openCamera(deviceId?: string): Promise<MediaStreamTrack> {
  try {
    const video = deviceId === undefined ? VIDEO : { ...VIDEO, deviceId: { exact: deviceId } };
    const stream = await mediaDevices("camera").getUserMedia({ video });
    return stream.getVideoTracks()[0] as MediaStreamTrack;
  } catch (err) {
    throw deviceError(err, "camera");
  }
}

/** Opens both at once (one permission prompt); either may be skipped. */
export async function openDevices(want: { audio: boolean; camera: boolean; audioDevice?: string; cameraDevice?: string }): Promise<{
  audio: MediaStreamTrack | null;
  camera: MediaStreamTrack | null;
}> {
  if (!want.audio && !want.camera) return { audio: null, camera: null };
  const what = want.audio && want.camera ? "camera and microphone" : want.audio ? "microphone" : "camera";
  try {
    const stream = await mediaDevices(what).getUserMedia({
      audio: want.audio ? (want.audioDevice === undefined ? AUDIO : { ...AUDIO, deviceId: { exact: want.audioDevice } }) : false,
      video: want.camera ? (want.cameraDevice === undefined ? VIDEO : { ...VIDEO, deviceId: { exact: want.cameraDevice } }) : false,
    });
    return { audio: stream.getAudioTracks()[0] ?? null, camera: stream.getVideoTracks()[0] ?? null };
  } catch (err) {
    throw deviceError(err, what);
  }
}

/** The browser's screen picker; the track ends when the person stops sharing from the browser's bar. */
export async function openScreen(): Promise<MediaStreamTrack> {
  const md = mediaDevices("screen");
  if (typeof md.getDisplayMedia !== "function") {
    throw new DeviceError("unsupported", "screen", "This browser cannot share a screen.");
  }
  try {
    const stream = await md.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    const track = stream.getVideoTracks()[0];
    if (track === undefined) throw new DeviceError("missing", "screen", "No screen was chosen.");
    if ("contentHint" in track) track.contentHint = "detail";
    return track;
  } catch (err) {
    throw deviceError(err, "screen");
  }
}

export interface DeviceInfo {
  readonly id: string;
  /** The browser's name for it (empty before a permission was granted: then "Camera 1", …). */
  readonly label: string;
  readonly kind: DeviceKind;
}

export interface DeviceLists {
  cameras: DeviceInfo[];
  microphones: DeviceInfo[];
  speakers: DeviceInfo[];
}

/** The cameras, microphones and speakers (speakers only where `setSinkId` exists). */
export async function listDevices(): Promise<DeviceLists> {
  const out: DeviceLists = { cameras: [], microphones: [], speakers: [] };
  if (typeof navigator === "undefined" || navigator.mediaDevices === undefined) return out;
  const all = await navigator.mediaDevices.enumerateDevices();
  const names: Record<MediaDeviceKind, [DeviceKind, string, DeviceInfo[]]> = {
    videoinput: ["camera", "Camera", out.cameras],
    audioinput: ["microphone", "Microphone", out.microphones],
    audiooutput: ["speaker", "Speaker", out.speakers],
  };
  for (const d of all) {
    const [kind, word, list] = names[d.kind];
    if (kind === "speaker" && !speakerSelectable()) continue;
    if (d.deviceId === "" && list.length > 0) continue; // no permission yet: one anonymous entry
    list.push({ id: d.deviceId, label: d.label || `${word} ${list.length + 1}`, kind });
  }
  return out;
}

/** Calls `listener` whenever a device is plugged in or out. */
export function onDevicesChanged(listener: () => void): () => void {
  const md = typeof navigator === "undefined" ? undefined : navigator.mediaDevices;
  if (md === undefined) return () => {};
  md.addEventListener("devicechange", listener);
  return () => md.removeEventListener("devicechange", listener);
}

/** Whether this browser lets a page choose the speaker (`HTMLMediaElement.setSinkId`). */
export function speakerSelectable(): boolean {
  return typeof HTMLMediaElement !== "undefined" && "setSinkId" in HTMLMediaElement.prototype;
}

/** Plays `element` on speaker `deviceId` ("" = the default); false where the browser cannot choose. */
export async function setSpeaker(element: HTMLMediaElement, deviceId: string): Promise<boolean> {
  if (!speakerSelectable()) return false;
  try {
    await (element as HTMLMediaElement & { setSinkId(id: string): Promise<void> }).setSinkId(deviceId);
    return true;
  } catch (err) {
    throw deviceError(err, "speaker");
  }
}

/**
 * One's own sources for a call: microphone, camera, screen; the choices of device; the
 * self-view. `onChange` listeners get the `LocalMedia` to hand to the topology
 * (`Topology.setMedia`) after every switch. Turning the camera off stops it (its light goes
 * out); muting is the topology's business (`setSending`), the microphone stays open.
 */
export class LocalDevices {
  audio: MediaStreamTrack | null = null;
  camera: MediaStreamTrack | null = null;
  screen: MediaStreamTrack | null = null;
  microphoneId: string | undefined;
  cameraId: string | undefined;
  speakerId = "";
  /** The self-view: the camera alone (never the microphone: no echo). */
  readonly preview = new MediaStream();
  readonly #listeners = new Set<(media: LocalMedia) => void>();

  get media(): LocalMedia {
    return { audio: this.audio, camera: this.camera, screen: this.screen };
  }

  onChange(listener: (media: LocalMedia) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #changed(): void {
    const media = this.media;
    for (const l of this.#listeners) l(media);
  }

  #setCamera(track: MediaStreamTrack | null): void {
    for (const t of this.preview.getVideoTracks()) this.preview.removeTrack(t);
    if (this.camera !== null && this.camera !== track) this.camera.stop();
    this.camera = track;
    if (track !== null) {
      this.preview.addTrack(track);
      this.cameraId = track.getSettings().deviceId ?? this.cameraId;
    }
  }

  #setAudio(track: MediaStreamTrack | null): void {
    if (this.audio !== null && this.audio !== track) this.audio.stop();
    this.audio = track;
    if (track !== null) this.microphoneId = track.getSettings().deviceId ?? this.microphoneId;
  }

  /** Opens what is wanted in one prompt. Throws DeviceError; what did open stays open. */
  async start(want: { audio: boolean; camera: boolean }): Promise<void> {
    const got = await openDevices({
      audio: want.audio && this.audio === null,
      camera: want.camera && this.camera === null,
      ...(this.microphoneId === undefined ? {} : { audioDevice: this.microphoneId }),
      ...(this.cameraId === undefined ? {} : { cameraDevice: this.cameraId }),
    });
    if (got.audio !== null) this.#setAudio(got.audio);
    if (got.camera !== null) this.#setCamera(got.camera);
    this.#changed();
  }

  /** Another microphone (the old one is stopped once the new one runs). */
  async useMicrophone(deviceId: string): Promise<void> {
    this.microphoneId = deviceId;
    if (this.audio === null) return;
    this.#setAudio(await openMicrophone(deviceId));
    this.#changed();
  }

  /** Another camera (applies when the camera is on). */
  async useCamera(deviceId: string): Promise<void> {
    this.cameraId = deviceId;
    if (this.camera === null) return;
    this.#setCamera(await openCamera(deviceId));
    this.#changed();
  }

  /** Camera on (opens it) or off (stops it). */
  async setCamera(on: boolean): Promise<void> {
    if (on === (this.camera !== null)) return;
    this.#setCamera(on ? await openCamera(this.cameraId) : null);
    this.#changed();
  }

  /** Opens the microphone if it is not open yet (joining muted opens it on the first unmute). */
  async ensureMicrophone(): Promise<void> {
    if (this.audio !== null) return;
    this.#setAudio(await openMicrophone(this.microphoneId));
    this.#changed();
  }

  /** Starts or stops sharing the screen; `onEnded` runs when the person stops it from the browser. */
  async shareScreen(on: boolean, onEnded?: () => void): Promise<void> {
    if (!on) {
      const track = this.screen;
      this.screen = null;
      track?.stop();
      if (track !== null) this.#changed();
      return;
    }
    if (this.screen !== null) return;
    const track = await openScreen();
    track.addEventListener("ended", () => {
      if (this.screen !== track) return;
      this.screen = null;
      this.#changed();
      onEnded?.();
    });
    this.screen = track;
    this.#changed();
  }

  /** Plays `element` on the chosen speaker. */
  async useSpeaker(deviceId: string, elements: Iterable<HTMLMediaElement>): Promise<boolean> {
    this.speakerId = deviceId;
    let ok = true;
    for (const el of elements) ok = (await setSpeaker(el, deviceId)) && ok;
    return ok;
  }

  /** Stops everything (leaving the call, or the pre-join screen). */
  stop(): void {
    this.#setAudio(null);
    this.#setCamera(null);
    this.screen?.stop();
    this.screen = null;
    this.#changed();
  }
}
