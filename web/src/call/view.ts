/**
 * How big this page shows each SFU slot (PROTOCOL.md §15.6 "Tile sizes"): the SFU picks a
 * simulcast layer per slot that fits the tile, and sends nothing into a slot nobody sees.
 *
 *   UI (TrackVideo)  ──watchShown(el, track)──▶  ShownTracks  (track id → CSS px × device pixel ratio)
 *   SfuTopology poll ──slotViews(slots, shown)──▶ ViewSender   (debounced, rate-capped, on change only)
 *                                                    └──▶ SfuView{slots: [mid, height]} to the server
 *
 * A slot that shows nobody yet is left out of the view (as big as available): reporting it as
 * 0 would pause it before its first frame could say whom it shows. A slot held at 0 (its tile
 * hidden or off screen) gets nothing from the SFU, so sfu.ts keeps its member longer
 * (SLOT_HELD_IDLE_MS) before it counts as idle. Sizes only: no names.
 */
import { MAX_VIEW_HEIGHT, type SlotView } from "../protocol/conference_wire.ts";

/** A view goes out this long after the last change (a resize drag sends one view, not fifty). */
export const VIEW_DEBOUNCE_MS = 300;
/** And never more often than this (the server takes 2 views/s, burst 10). */
export const VIEW_MIN_INTERVAL_MS = 500;
/** After a refused view, the next one waits this long. */
export const VIEW_RETRY_MS = 5_000;

/** The height in device pixels at which an element `cssHeight` CSS px tall is shown; 0 when not shown. */
export function shownHeight(cssHeight: number, devicePixelRatio: number, visible: boolean): number {
  if (!visible || !(cssHeight > 0)) return 0;
  const ratio = devicePixelRatio > 0 && Number.isFinite(devicePixelRatio) ? devicePixelRatio : 1;
  return Math.min(MAX_VIEW_HEIGHT, Math.max(1, Math.round(cssHeight * ratio)));
}

/**
 * What the page shows of each track: every element rendering it, at its height in CSS pixels
 * (0: not shown), and the largest wins. Heights come out in device pixels at the ratio of the
 * moment they are read (it changes without a resize when the window moves to another screen).
 */
export class ShownTracks {
  readonly #byElement = new Map<object, { trackId: string; cssHeight: number }>();
  readonly #listeners = new Set<() => void>();

  constructor(readonly ratio: () => number = () => globalThis.devicePixelRatio ?? 1) {}

  set(element: object, trackId: string, cssHeight: number): void {
    const before = this.#byElement.get(element);
    if (before?.trackId === trackId && before.cssHeight === cssHeight) return;
    this.#byElement.set(element, { trackId, cssHeight });
    this.#changed();
  }

  delete(element: object): void {
    if (this.#byElement.delete(element)) this.#changed();
  }

  /** The height (device px) of the largest element showing `trackId`; 0: none shows it. */
  height(trackId: string): number {
    let best = 0;
    for (const shown of this.#byElement.values()) if (shown.trackId === trackId) best = Math.max(best, shown.cssHeight);
    return shownHeight(best, this.ratio(), true);
  }

  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #changed(): void {
    for (const listener of this.#listeners) listener();
  }
}

/** This page's (one document, one set of rendered videos). */
export const shownTracks = new ShownTracks();

/** One receiving slot as the SFU topology knows it. */
export interface SlotShown {
  readonly mid: string | null;
  readonly trackId: string;
  /** It shows someone now (its frames say whom): otherwise it is left out of the view. */
  readonly showing: boolean;
}

/** The view to send: each showing slot's height (every slot 0 while the page is hidden). */
export function slotViews(slots: readonly SlotShown[], heightOf: (trackId: string) => number, pageHidden: boolean): SlotView[] {
  const out: SlotView[] = [];
  for (const slot of slots) {
    if (slot.mid === null) continue;
    if (pageHidden) out.push({ mid: slot.mid, height: 0 });
    else if (slot.showing) out.push({ mid: slot.mid, height: heightOf(slot.trackId) });
  }
  return out;
}

export function sameView(a: readonly SlotView[] | null, b: readonly SlotView[] | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && a.every((s, i) => s.mid === b[i]!.mid && s.height === b[i]!.height);
}

export interface ViewSenderOptions {
  readonly debounceMs?: number;
  readonly minIntervalMs?: number;
  readonly retryMs?: number;
  readonly now?: () => number;
}

/**
 * When a view goes out: `VIEW_DEBOUNCE_MS` after it last changed, at most every
 * `VIEW_MIN_INTERVAL_MS`, and only if it differs from the last one the server took. `reset()`
 * after a new connection to the node (a new node knows no view).
 */
export class ViewSender {
  #pending: SlotView[] | null = null;
  #sent: SlotView[] | null = null;
  #sentAt = -Infinity;
  #notBefore = -Infinity;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #sending = false;
  #closed = false;
  readonly #debounceMs: number;
  readonly #minIntervalMs: number;
  readonly #retryMs: number;
  readonly #now: () => number;
  /** Views the server took, and refused (tests, status). */
  readonly counters = { sent: 0, refused: 0 };

  constructor(readonly send: (slots: SlotView[]) => Promise<void>, options: ViewSenderOptions = {}) {
    this.#debounceMs = options.debounceMs ?? VIEW_DEBOUNCE_MS;
    this.#minIntervalMs = options.minIntervalMs ?? VIEW_MIN_INTERVAL_MS;
    this.#retryMs = options.retryMs ?? VIEW_RETRY_MS;
    this.#now = options.now ?? Date.now;
  }

  /** The view now (called as often as the caller likes: only changes count). */
  update(slots: SlotView[]): void {
    if (this.#closed || sameView(slots, this.#pending)) return;
    this.#pending = slots;
    this.#schedule();
  }

  reset(): void {
    this.#sent = null;
    this.#sentAt = -Infinity;
    if (this.#pending !== null) this.#schedule();
  }

  close(): void {
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** The last view the server took (tests). */
  get sent(): readonly SlotView[] | null {
    return this.#sent;
  }

  #schedule(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (sameView(this.#pending, this.#sent)) return;
    const now = this.#now();
    const at = Math.max(now + this.#debounceMs, this.#sentAt + this.#minIntervalMs, this.#notBefore);
    const timer = setTimeout(() => void this.#fire(), at - now);
    (timer as { unref?: () => void }).unref?.(); // never what keeps a Node test alive
    this.#timer = timer;
  }

  async #fire(): Promise<void> {
    this.#timer = null;
    const view = this.#pending;
    if (this.#closed || view === null || sameView(view, this.#sent)) return;
    if (this.#sending) return this.#schedule(); // one at a time, in order
    this.#sending = true;
    this.#sentAt = this.#now();
    try {
      await this.send(view);
      this.#sent = view;
      this.counters.sent++;
    } catch {
      // Advisory: the SFU then keeps the last view it took. Try again later, not at once.
      this.counters.refused++;
      this.#notBefore = this.#now() + this.#retryMs;
    } finally {
      this.#sending = false;
    }
    if (!this.#closed && !sameView(this.#pending, this.#sent)) this.#schedule();
  }
}

/** Is this page hidden (another tab, minimised window)? Nothing of it is shown then. */
export function pageHidden(): boolean {
  return typeof document !== "undefined" && document.visibilityState === "hidden";
}

/**
 * Keep `shown` told how big `element` shows `trackId` (ResizeObserver for its size, an
 * IntersectionObserver for off screen, the page's visibility), until the returned stop().
 */
export function watchShown(element: HTMLElement, trackId: string, shown: ShownTracks = shownTracks): () => void {
  let onScreen = true;
  const measure = (): void => {
    const visible = onScreen && !pageHidden();
    shown.set(element, trackId, visible ? element.getBoundingClientRect().height : 0);
  };
  const resized = new ResizeObserver(measure);
  resized.observe(element);
  const seen = new IntersectionObserver((entries) => {
    onScreen = entries.at(-1)?.isIntersecting ?? onScreen;
    measure();
  });
  seen.observe(element);
  document.addEventListener("visibilitychange", measure);
  measure();
  return () => {
    resized.disconnect();
    seen.disconnect();
    document.removeEventListener("visibilitychange", measure);
    shown.delete(element);
  };
}
