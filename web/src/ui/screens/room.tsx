/** A room: chat (messages + composer), channel (stories + posts) or call (call.tsx). */
import type { JSX } from "preact";
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { useEnv } from "../app.tsx";
import { explain } from "../errors.ts";
import { clock, day, duration, TIMERS, timeLeft } from "../format.ts";
import { roomKey, useStore, type MessageVM, type RoomLiveVM, type RoomVM, type SpaceVM } from "../state.ts";
import { Avatar, Icon, IconButton, Private } from "../components.tsx";
import { PanelHeader } from "./space.tsx";
import { StoriesRow } from "./stories.tsx";
import { CallScreen } from "./call.tsx";

const EMPTY: RoomLiveVM = { loading: true, messages: [], stories: [], firstUnread: null, notice: null };

export function RoomScreen({ space, room }: { space: SpaceVM; room: RoomVM }): JSX.Element {
  const { store, intents } = useEnv();
  const live = useStore(store, (s) => s.rooms[roomKey(space.slot, room.id)]) ?? EMPTY;
  useEffect(() => {
    if (room.kind === "call") return;
    intents.openRoom(space.slot, room.id);
    return () => intents.openRoom(space.slot, null);
  }, [space.slot, room.id]);

  if (room.kind === "call") return <CallScreen space={space} room={room} />;
  const channel = room.kind === "channel";
  return (
    <div class="room">
      <PanelHeader space={space} title={room.name} sub={<Private text={channel ? "Channel · end-to-end encrypted" : "End-to-end encrypted"} />} />
      {channel ? <StoriesRow space={space} room={room} stories={live.stories} /> : null}
      {live.notice !== null ? <p class="notice" role="status">{live.notice}</p> : null}
      <MessageList live={live} channel={channel} photos={photosOf(space)} />
      {room.canPost ? (
        <Composer space={space} room={room} />
      ) : (
        <p class="composer-none muted">{channel ? "Only the channel's publishers post here. You can read everything." : "You can't write in this room."}</p>
      )}
    </div>
  );
}

function photosOf(space: SpaceVM): ReadonlyMap<string, string> {
  const photos = new Map<string, string>();
  for (const member of space.members) if (member.photo !== null) photos.set(member.key, member.photo);
  return photos;
}

/** Re-renders every `ms` while `active` (countdowns). */
function useNow(active: boolean, ms = 1000): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    if (!active) return;
    setNow(Date.now());
    const timer = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(timer);
  }, [active, ms]);
  return active ? now : Date.now();
}

const GROUP_GAP = 5 * 60 * 1000;

function MessageList({ live, channel, photos }: { live: RoomLiveVM; channel: boolean; photos: ReadonlyMap<string, string> }): JSX.Element {
  const list = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const counting = live.messages.some((m) => m.expiresAt !== null);
  const now = useNow(counting);
  const shown = live.messages.filter((m) => m.expiresAt === null || m.expiresAt > now);

  useLayoutEffect(() => {
    const el = list.current;
    if (el !== null && atBottom.current) el.scrollTop = el.scrollHeight;
  }, [shown.length, shown[shown.length - 1]?.id]);

  if (live.loading && shown.length === 0) return <div class="messages messages-empty" aria-busy="true"><p class="muted">Loading messages…</p></div>;
  if (shown.length === 0) {
    return <div class="messages messages-empty"><p class="muted">{channel ? "No posts yet." : "No messages yet. Say hello!"}</p></div>;
  }
  const items: JSX.Element[] = [];
  let previous: MessageVM | undefined;
  for (const message of shown) {
    const newDay = previous === undefined || day(previous.at, now) !== day(message.at, now);
    if (newDay) items.push(<li class="day" key={`day-${message.id}`}><span>{day(message.at, now)}</span></li>);
    if (message.id === live.firstUnread) items.push(<li class="new-marker" key="new" role="separator" aria-label="New messages"><span>New messages</span></li>);
    const first = newDay || message.id === live.firstUnread || previous === undefined || previous.hidden || previous.authorKey !== message.authorKey || message.at - previous.at > GROUP_GAP;
    items.push(<MessageItem key={message.id} message={message} first={first} now={now} photo={photos.get(message.authorKey) ?? null} />);
    previous = message;
  }
  return (
    <div
      class="messages"
      ref={list}
      role="log"
      aria-live="polite"
      aria-label={channel ? "Posts" : "Messages"}
      tabIndex={0}
      onScroll={(event) => {
        const el = event.currentTarget;
        atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
      }}
    >
      <ol class="message-items">{items}</ol>
    </div>
  );
}

function MessageItem({ message, first, now, photo }: { message: MessageVM; first: boolean; now: number; photo: string | null }): JSX.Element {
  if (message.hidden) {
    return (
      <li class="message message-first message-hidden">
        <div class="message-gutter" />
        <p class="message-body muted small" dir="auto">{message.text}</p>
      </li>
    );
  }
  const left = message.expiresAt !== null ? timeLeft(message.expiresAt, now) : "";
  return (
    <li data-testid="message" class={`message${first ? " message-first" : ""}${message.mine ? " message-mine" : ""}${message.pending ? " message-pending" : ""}`}>
      <div class="message-gutter">{first ? <Avatar name={message.authorName} keyHex={message.authorKey} photo={photo} size="s" /> : null}</div>
      <div class="message-body">
        {first ? (
          <p class="message-meta">
            <strong class="message-author"><bdi>{message.mine ? "You" : message.authorName}</bdi></strong>{" "}
            <time class="muted small" dateTime={new Date(message.at).toISOString()}>{clock(message.at)}</time>
          </p>
        ) : null}
        <p class="message-text" dir="auto">{message.text}</p>
        {left !== "" || message.pending ? (
          <p class="message-foot muted small">
            {message.pending ? <span>Sending…</span> : null}
            {left !== "" ? <span class="countdown" title="This message will disappear"><Icon name="timer" size={12} /> disappears in {left}</span> : null}
          </p>
        ) : null}
      </div>
    </li>
  );
}

function Composer({ space, room }: { space: SpaceVM; room: RoomVM }): JSX.Element {
  const { intents } = useEnv();
  const [text, setText] = useState("");
  const [ttl, setTtl] = useState(0);
  const [menu, setMenu] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const input = useRef<HTMLTextAreaElement>(null);
  const timer = TIMERS.find((t) => t.seconds === ttl) ?? TIMERS[0]!;

  const send = (): void => {
    const body = text.trim();
    if (body === "") return;
    setText("");
    setError(null);
    intents.send(space.slot, room.id, body, ttl).catch((e: unknown) => {
      setError(explain(e));
      setText((current) => (current === "" ? body : current));
    });
    input.current?.focus();
  };
  return (
    <form
      class="composer"
      onSubmit={(event) => {
        event.preventDefault();
        send();
      }}
    >
      {error !== null ? <p class="error composer-error" role="alert">{error}</p> : null}
      <div class="composer-row">
        <div class="timer">
          <button
            type="button"
            class={`icon-button timer-button${ttl > 0 ? " timer-on" : ""}`}
            aria-haspopup="menu"
            aria-expanded={menu}
            aria-label={ttl > 0 ? `Disappearing messages: ${timer.label}` : "Disappearing messages: off"}
            title="Disappearing messages"
            onClick={() => setMenu(!menu)}
          >
            <Icon name="timer" />
            {ttl > 0 ? <span class="timer-label">{timer.short}</span> : null}
          </button>
          {menu ? (
            <TimerMenu
              value={ttl}
              lifetime={room.lifetime}
              onPick={(seconds) => {
                setTtl(seconds);
                setMenu(false);
                input.current?.focus();
              }}
              onClose={() => setMenu(false)}
            />
          ) : null}
        </div>
        <label class="composer-field">
          <span class="visually-hidden">{room.kind === "channel" ? "Write a post" : "Write a message"}</span>
          <textarea
            ref={input}
            rows={1}
            value={text}
            placeholder={room.kind === "channel" ? "Write a post" : "Message"}
            onInput={(e) => setText(e.currentTarget.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
                e.preventDefault();
                send();
              }
            }}
          />
        </label>
        <IconButton icon="send" label="Send" type="submit" class="send-button" disabled={text.trim() === ""} />
      </div>
      {ttl > 0 ? (
        <p class="composer-hint small muted">New messages disappear after {timer.label}.</p>
      ) : room.lifetime > 0 ? (
        <p class="composer-hint small muted">Messages in this room disappear after {duration(room.lifetime)}.</p>
      ) : null}
    </form>
  );
}

function TimerMenu({ value, lifetime, onPick, onClose }: { value: number; lifetime: number; onPick: (seconds: number) => void; onClose: () => void }): JSX.Element {
  const first = useRef<HTMLButtonElement>(null);
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    first.current?.focus();
    // A press anywhere outside the menu closes it.
    const outside = (event: PointerEvent): void => {
      const target = event.target as Node | null;
      if (box.current !== null && target !== null && !box.current.parentElement?.contains(target)) onClose();
    };
    document.addEventListener("pointerdown", outside);
    return () => document.removeEventListener("pointerdown", outside);
  }, []);
  return (
    <div
      ref={box}
      class="menu timer-menu"
      role="menu"
      aria-label="Disappearing messages"
      onKeyDown={(e) => {
        if (e.key === "Escape") {
          e.preventDefault();
          onClose();
        }
        if (e.key === "ArrowDown" || e.key === "ArrowUp") {
          e.preventDefault();
          const items = Array.from(e.currentTarget.querySelectorAll<HTMLButtonElement>("button"));
          const at = items.indexOf(document.activeElement as HTMLButtonElement);
          items[(at + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length]?.focus();
        }
      }}
    >
      <p class="menu-title small muted">Messages disappear after</p>
      {TIMERS.map((t, i) => (
        <button key={t.seconds} ref={i === 0 ? first : null} type="button" role="menuitemradio" aria-checked={t.seconds === value} class="menu-item" onClick={() => onPick(t.seconds)}>
          {t.seconds === 0 && lifetime > 0 ? `Room's own (${duration(lifetime)})` : t.label}
          {t.seconds === value ? <span aria-hidden="true"> ✓</span> : null}
        </button>
      ))}
    </div>
  );
}
