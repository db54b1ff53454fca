/**
 * A space: the sidebar (rooms grouped Chats / Channels / Calls; members; invite; settings) and
 * the selected screen. On a phone the sidebar is the first screen and a room opens full-screen
 * with a back arrow (CSS: `.space[data-panel]`).
 */
import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";
import { Message, useEnv } from "../app.tsx";
import type { Route } from "../router.ts";
import { navigate } from "../router.ts";
import { useStore, type RoomKind, type RoomVM, type SpaceVM } from "../state.ts";
import { ConnectionBanner, Dialog, Icon, Link, type IconName } from "../components.tsx";
import { explain } from "../errors.ts";
import { RoomScreen } from "./room.tsx";
import { MembersScreen } from "./members.tsx";
import { InviteScreen } from "./invite.tsx";
import { SettingsScreen } from "./settings.tsx";

type SpaceRoute = Extract<Route, { slot: string }>;

export const canModerate = (space: SpaceVM): boolean => space.me.role === "owner" || space.me.role === "moderator";

export function SpaceScreen({ route }: { route: SpaceRoute }): JSX.Element {
  const { store, intents } = useEnv();
  const space = useStore(store, (s) => s.space[route.slot]);
  const known = useStore(store, (s) => s.spaces.some((card) => card.slot === route.slot));
  const problem = useStore(store, (s) => s.spaceErrors[route.slot]);
  useEffect(() => {
    intents.openSpace(route.slot);
  }, [route.slot]);

  if (space === undefined) {
    if (!known) return <Message title="This space is not on this browser" text="You may have joined it on another device or browser. Open an invitation link to join here." home />;
    if (problem !== undefined) return <Message title="Opening the space…" text={problem} busy />;
    return <Message title="Opening the space…" text="Connecting and checking the latest changes." busy />;
  }
  if (space.removed !== null) return <RemovedScreen space={space} />;
  const panel = route.name !== "space";
  return (
    <div class="space" data-testid="space-view" data-panel={panel ? "open" : undefined}>
      <Sidebar space={space} route={route} />
      <main class="space-main" id="main">
        <ConnectionBanner connection={space.connection} />
        {space.warning ? <div class="banner banner-warning" role="alert">{space.warning}</div> : null}
        <Panel space={space} route={route} />
      </main>
    </div>
  );
}

function Panel({ space, route }: { space: SpaceVM; route: SpaceRoute }): JSX.Element {
  switch (route.name) {
    case "room": {
      const room = space.rooms.find((r) => r.id === route.roomId);
      if (room === undefined) return <PanelMessage space={space} title="This room is gone" text="It may have been removed, or you may not see it yet." />;
      return <RoomScreen space={space} room={room} />;
    }
    case "members": return <MembersScreen space={space} />;
    case "invite": return <InviteScreen space={space} />;
    case "settings": return <SettingsScreen space={space} />;
    default: return <PanelMessage space={space} title={space.name} text={space.rooms.length === 0 ? "There are no rooms yet." : "Pick a room on the left."} />;
  }
}

export function PanelHeader(props: { space: SpaceVM; title: string; sub?: JSX.Element | string | null; actions?: JSX.Element | null }): JSX.Element {
  return (
    <header class="panel-header">
      <Link href={`/space/${props.space.slot}`} class="icon-button back" label={`Back to ${props.space.name}`}>
        <Icon name="back" />
      </Link>
      <div class="panel-title">
        <h1>{props.title}</h1>
        {props.sub ? <p class="muted small">{props.sub}</p> : null}
      </div>
      {props.actions ?? null}
    </header>
  );
}

function PanelMessage({ space, title, text }: { space: SpaceVM; title: string; text: string }): JSX.Element {
  return (
    <>
      <PanelHeader space={space} title={title} />
      <div class="panel-empty"><p class="muted">{text}</p></div>
    </>
  );
}

const GROUPS: readonly { kind: RoomKind; title: string; icon: IconName }[] = [
  { kind: "chat", title: "Chats", icon: "chat" },
  { kind: "channel", title: "Channels", icon: "channel" },
  { kind: "call", title: "Calls", icon: "call" },
];

function Sidebar({ space, route }: { space: SpaceVM; route: SpaceRoute }): JSX.Element {
  const [creating, setCreating] = useState(false);
  const here = (name: Route["name"], roomId?: string): boolean =>
    route.name === name && (roomId === undefined || (route.name === "room" && route.roomId === roomId));
  return (
    <nav class="sidebar" aria-label={`${space.name} rooms`}>
      <div class="sidebar-head">
        <Link href="/" class="icon-button" label="All your spaces"><Icon name="home" /></Link>
        <h2 class="sidebar-title" title={space.name}><bdi>{space.name}</bdi></h2>
      </div>
      {GROUPS.map((group) => {
        const rooms = space.rooms.filter((room) => room.kind === group.kind);
        if (rooms.length === 0) return null;
        return (
          <section class="nav-group" key={group.kind} aria-labelledby={`group-${group.kind}`}>
            <h3 class="nav-group-title" id={`group-${group.kind}`}>{group.title}</h3>
            <ul role="list">
              {rooms.map((room) => <RoomLink key={room.id} space={space} room={room} icon={group.icon} current={here("room", room.id)} />)}
            </ul>
          </section>
        );
      })}
      {canModerate(space) ? (
        <button type="button" class="nav-item nav-new" onClick={() => setCreating(true)}>
          <Icon name="plus" /> <span>New room</span>
        </button>
      ) : null}
      <section class="nav-group" aria-label="Space">
        <ul role="list">
          <li><Link href={`/space/${space.slot}/members`} class="nav-item" current={here("members")}><Icon name="people" /><span>Members</span><span class="nav-count">{space.members.length}</span></Link></li>
          {canModerate(space) ? <li><Link href={`/space/${space.slot}/invite`} class="nav-item" current={here("invite")}><Icon name="link" /><span>Invite people</span></Link></li> : null}
          <li><Link href={`/space/${space.slot}/settings`} class="nav-item" current={here("settings")}><Icon name="settings" /><span>Settings</span></Link></li>
        </ul>
      </section>
      {creating ? <NewRoom space={space} onClose={() => setCreating(false)} /> : null}
    </nav>
  );
}

function RoomLink({ space, room, icon, current }: { space: SpaceVM; room: RoomVM; icon: IconName; current: boolean }): JSX.Element {
  return (
    <li>
      <Link href={`/space/${space.slot}/room/${room.id}`} class="nav-item" current={current}>
        <Icon name={icon} />
        <span class="nav-label"><bdi>{room.name}</bdi></span>
        {room.unread > 0 ? <span class="badge" aria-label={`${room.unread} unread`}>{room.unread > 99 ? "99+" : room.unread}</span> : null}
      </Link>
    </li>
  );
}

function NewRoom({ space, onClose }: { space: SpaceVM; onClose: () => void }): JSX.Element {
  const { intents } = useEnv();
  const [name, setName] = useState("");
  const [kind, setKind] = useState<RoomKind>("chat");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  return (
    <Dialog title="New room" onClose={onClose}>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          setBusy(true);
          intents.createRoom(space.slot, name.trim(), kind).then(
            (roomId) => {
              onClose();
              navigate(`/space/${space.slot}/room/${roomId}`);
            },
            (e: unknown) => {
              setError(explain(e));
              setBusy(false);
            },
          );
        }}
      >
        <label class="field">
          <span>Name</span>
          <input value={name} required maxLength={64} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <fieldset class="field choices">
          <legend>Kind</legend>
          {([["chat", "Chat", "Everyone can write."], ["channel", "Channel", "Only people you choose post; everyone reads."], ["call", "Call", "Voice and video."]] as const).map(([value, label, help]) => (
            <label class="choice" key={value}>
              <input type="radio" name="kind" value={value} checked={kind === value} onChange={() => setKind(value)} />
              <span><strong>{label}</strong> <span class="muted">{help}</span></span>
            </label>
          ))}
        </fieldset>
        {error !== null ? <p class="error" role="alert">{error}</p> : null}
        <div class="dialog-actions">
          <button type="button" class="button" onClick={onClose}>Cancel</button>
          <button type="submit" class="button button-primary" disabled={busy || name.trim() === ""}>{busy ? "Creating…" : "Create"}</button>
        </div>
      </form>
    </Dialog>
  );
}

function RemovedScreen({ space }: { space: SpaceVM }): JSX.Element {
  const { intents } = useEnv();
  const [busy, setBusy] = useState(false);
  const text =
    space.removed === "banned"
      ? "You were removed from this space and can't rejoin it. What you could read before stays on this device until you remove the space."
      : space.removed === "left"
        ? "You left this space. You can join again only with a new invitation."
        : space.removed === "unconfirmed"
          ? "The server no longer lets this browser in and says you were removed, probably while this page was closed. This browser could not " +
            "check that against the space's signed history, so if you think it is wrong, ask another member. What you could read stays here until you remove the space."
          : "You were removed from this space. You won't be able to read anything new. Ask for a new link if this was a mistake.";
  return (
    <main class="centered">
      <div class="card narrow">
        <h1>{space.removed === "left" ? `You left ${space.name}` : space.removed === "unconfirmed" ? `You can't get into ${space.name} anymore` : `You are no longer in ${space.name}`}</h1>
        <p>{text}</p>
        <div class="button-row">
          <Link href="/" class="button button-primary">Go to your spaces</Link>
          <button
            type="button"
            class="button"
            disabled={busy}
            onClick={() => {
              setBusy(true);
              intents.leave(space.slot).then(() => navigate("/", { replace: true }), () => setBusy(false));
            }}
          >
            Remove it from this browser
          </button>
        </div>
      </div>
    </main>
  );
}
