/** Small shared pieces: icons, avatars, buttons, the confirmation dialog, banners. */
import type { ComponentChildren, JSX } from "preact";
import { useEffect, useRef } from "preact/hooks";
import { hue, initials } from "./format.ts";
import { navigate } from "./router.ts";

const PATHS = {
  back: "M15 5l-7 7 7 7",
  chat: "M4 5h16v11H8l-4 4z",
  channel: "M4 10v4h3l6 4V6L7 10zM16 9a4 4 0 010 6",
  call: "M6 3h3l2 5-2.5 1.5a11 11 0 005 5L15 12l5 2v3a2 2 0 01-2 2A16 16 0 014 5a2 2 0 012-2z",
  people: "M9 11a4 4 0 100-8 4 4 0 000 8zM2 21v-1a6 6 0 0112 0v1M16 3.5a4 4 0 010 7.5M18 14a6 6 0 014 6v1",
  link: "M10 14a4 4 0 005.7 0l3-3a4 4 0 00-5.7-5.7l-1 1M14 10a4 4 0 00-5.7 0l-3 3a4 4 0 005.7 5.7l1-1",
  settings: "M12 15a3 3 0 100-6 3 3 0 000 6zM19 12l2-1-1-3-2 .2-1.2-1.5.5-2-3-1-1 1.8h-1.6L10.8 3l-3 1 .5 2L7 7.3 5 7 4 10l2 1v2l-2 1 1 3 2-.2 1.2 1.5-.5 2 3 1 1-1.8h1.6l1 1.8 3-1-.5-2 1.2-1.5 2 .2 1-3-2-1z",
  send: "M4 12l16-8-6 16-2-7z",
  timer: "M12 21a8 8 0 100-16 8 8 0 000 16zM12 9v4l2 2M9 2h6",
  lock: "M6 11h12v10H6zM8 11V7a4 4 0 018 0v4",
  plus: "M12 5v14M5 12h14",
  close: "M6 6l12 12M18 6L6 18",
  left: "M15 5l-7 7 7 7",
  right: "M9 5l7 7-7 7",
  more: "M5 12h.01M12 12h.01M19 12h.01",
  copy: "M8 8h12v12H8zM4 16V4h12",
  home: "M3 11l9-8 9 8M5 10v10h14V10",
  camera: "M4 8h4l2-3h4l2 3h4v11H4zM12 17a3.5 3.5 0 100-7 3.5 3.5 0 000 7z",
} as const;

export type IconName = keyof typeof PATHS;

export function Icon({ name, size = 22 }: { name: IconName; size?: number }): JSX.Element {
  return (
    <svg class="icon" width={size} height={size} viewBox="0 0 24 24" aria-hidden="true" focusable="false">
      <path d={PATHS[name]} fill="none" stroke="currentColor" stroke-width={name === "more" ? 3.5 : 2} stroke-linecap="round" stroke-linejoin="round" />
    </svg>
  );
}

/** A round picture: the member's photo, or their initials on a colour from their key. */
export function Avatar({ name, keyHex, photo, size = "m" }: { name: string; keyHex: string; photo: string | null; size?: "s" | "m" | "l" }): JSX.Element {
  if (photo !== null) return <img class={`avatar avatar-${size}`} src={photo} alt="" />;
  return (
    <span class={`avatar avatar-${size} avatar-hue-${Math.floor(hue(keyHex) / 30)}`} aria-hidden="true">
      {initials(name)}
    </span>
  );
}

/** A button that shows only an icon: it always carries a label for screen readers. */
export function IconButton(props: { icon: IconName; label: string; onClick?: () => void; class?: string; pressed?: boolean; disabled?: boolean; type?: "button" | "submit" }): JSX.Element {
  return (
    <button
      type={props.type ?? "button"}
      class={`icon-button ${props.class ?? ""}`}
      aria-label={props.label}
      title={props.label}
      aria-pressed={props.pressed}
      disabled={props.disabled}
      onClick={props.onClick}
    >
      <Icon name={props.icon} />
    </button>
  );
}

/** An in-app link: a real <a href> (middle-click, copy link) that navigates without a reload. */
export function Link(props: { href: string; class?: string; children: ComponentChildren; label?: string; current?: boolean }): JSX.Element {
  return (
    <a
      href={props.href}
      class={props.class}
      aria-label={props.label}
      aria-current={props.current ? "page" : undefined}
      onClick={(event) => {
        if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
        event.preventDefault();
        navigate(props.href);
      }}
    >
      {props.children}
    </a>
  );
}

/** A modal dialog (native <dialog>: focus is kept inside, Esc closes). */
export function Dialog(props: { title: string; onClose: () => void; children: ComponentChildren; wide?: boolean }): JSX.Element {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    // Focus goes back where it was when the dialog goes away (it is unmounted, not closed).
    const before = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    const dialog = ref.current;
    if (dialog !== null && !dialog.open) dialog.showModal();
    return () => before?.focus();
  }, []);
  return (
    <dialog
      ref={ref}
      class={props.wide ? "dialog dialog-wide" : "dialog"}
      aria-label={props.title}
      onCancel={(event) => {
        event.preventDefault();
        props.onClose();
      }}
      onClick={(event) => {
        if (event.target === ref.current) props.onClose();
      }}
    >
      <div class="dialog-body">
        <h2 class="dialog-title">{props.title}</h2>
        {props.children}
      </div>
    </dialog>
  );
}

/** "Are you sure?" for destructive actions: says what will happen, one red button. */
export function Confirm(props: { title: string; body: string; action: string; onConfirm: () => void; onCancel: () => void; busy?: boolean; error?: string | null }): JSX.Element {
  return (
    <Dialog title={props.title} onClose={props.onCancel}>
      <p>{props.body}</p>
      {props.error ? <p class="error" role="alert">{props.error}</p> : null}
      <div class="dialog-actions">
        <button type="button" class="button" onClick={props.onCancel}>Cancel</button>
        <button type="button" class="button button-danger" disabled={props.busy} onClick={props.onConfirm}>{props.action}</button>
      </div>
    </Dialog>
  );
}

/** The quiet line shown while the connection is being restored. */
export function ConnectionBanner({ connection }: { connection: string }): JSX.Element | null {
  if (connection === "online") return null;
  const text = connection === "connecting" ? "Connecting…" : connection === "reconnecting" ? "Reconnecting… messages will arrive when the connection is back." : "Offline. Trying again shortly…";
  return <div class="banner" role="status">{text}</div>;
}

/** The small calm lock: "End-to-end encrypted". */
export function Private({ text = "End-to-end encrypted" }: { text?: string }): JSX.Element {
  return (
    <span class="private">
      <Icon name="lock" size={14} /> {text}
    </span>
  );
}

export function BackLink({ href, label }: { href: string; label: string }): JSX.Element {
  return (
    <Link href={href} class="icon-button back" label={label}>
      <Icon name="back" />
    </Link>
  );
}
