/** Members: name, role, fingerprint (tap to learn what it is for); owners/moderators get a menu. */
import type { JSX } from "preact";
import { useState } from "preact/hooks";
import { useEnv } from "../app.tsx";
import { explain } from "../errors.ts";
import { groupFingerprint, ROLE_LABEL } from "../format.ts";
import type { MemberVM, Role, SpaceVM } from "../state.ts";
import { Avatar, Confirm, Dialog, IconButton } from "../components.tsx";
import { PanelHeader } from "./space.tsx";

const RANK: Record<Role, number> = { member: 1, moderator: 2, owner: 3 };

/** " · posts in News, Market" for a member allowed to post in channels. */
function postsIn(space: SpaceVM, member: MemberVM): string {
  if (member.role !== "member") return "";
  const names = space.rooms.filter((room) => room.kind === "channel" && room.publishers.includes(member.key)).map((room) => room.name);
  return names.length === 0 ? "" : ` · posts in ${names.join(", ")}`;
}

type Pending = { readonly kind: "role"; readonly role: Role } | { readonly kind: "remove" } | { readonly kind: "ban" };

export function MembersScreen({ space }: { space: SpaceVM }): JSX.Element {
  const [explaining, setExplaining] = useState<MemberVM | null>(null);
  const [managing, setManaging] = useState<MemberVM | null>(null);
  const members = [...space.members].sort((a, b) => RANK[b.role] - RANK[a.role] || a.name.localeCompare(b.name));
  return (
    <div class="panel-page">
      <PanelHeader space={space} title="Members" sub={`${space.members.length} ${space.members.length === 1 ? "person" : "people"}`} />
      <ul class="member-list" role="list">
        {members.map((member) => (
          <li class="member" key={member.key}>
            <Avatar name={member.name} keyHex={member.key} photo={member.photo} />
            <div class="member-info">
              <p class="member-name"><bdi>{member.name}</bdi>{member.me ? <span class="muted"> (you)</span> : null}</p>
              <p class="muted small">{ROLE_LABEL[member.role]}{postsIn(space, member)}</p>
            </div>
            <button type="button" class="fingerprint" aria-label={`Fingerprint of ${member.name}: ${groupFingerprint(member.fingerprint)}. What is this?`} onClick={() => setExplaining(member)}>
              {groupFingerprint(member.fingerprint, 2)}
            </button>
            {member.manageable ? <IconButton icon="more" label={`Manage ${member.name}`} onClick={() => setManaging(member)} /> : <span class="icon-spacer" />}
          </li>
        ))}
      </ul>
      {explaining !== null ? (
        <Dialog title={`${explaining.me ? "Your" : `${explaining.name}'s`} fingerprint`} onClose={() => setExplaining(null)}>
          <p class="fingerprint-big">{groupFingerprint(explaining.fingerprint)}</p>
          <p>{explaining.me ? "Others can compare this with what their screen shows for you, in person or on a call, to be sure it is really you." : `Compare this with ${explaining.name} in person or on a call to be sure it is really them. If it matches on both screens, no one is listening in between.`}</p>
          <div class="dialog-actions"><button type="button" class="button button-primary" onClick={() => setExplaining(null)}>Done</button></div>
        </Dialog>
      ) : null}
      {managing !== null ? <Manage space={space} member={managing} onClose={() => setManaging(null)} /> : null}
    </div>
  );
}

function Manage({ space, member, onClose }: { space: SpaceVM; member: MemberVM; onClose: () => void }): JSX.Element {
  const { intents } = useEnv();
  const [pending, setPending] = useState<Pending | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = (work: Promise<void>): void => {
    setBusy(true);
    setError(null);
    work.then(onClose, (e: unknown) => {
      setError(explain(e));
      setBusy(false);
    });
  };
  if (pending !== null) {
    const name = member.name;
    const copy =
      pending.kind === "role"
        ? pending.role === "owner"
          ? { title: `Make ${name} an owner?`, body: `${name} will be able to do everything you can: invite people, remove people and change anyone's role, yours included.`, action: "Make owner" }
          : pending.role === "moderator"
            ? { title: `Make ${name} a moderator?`, body: `${name} will be able to invite people, create rooms, and remove members.`, action: "Make moderator" }
            : { title: `Make ${name} a member?`, body: `${name} will no longer be able to invite people or remove members.`, action: "Make member" }
        : pending.kind === "remove"
          ? { title: `Remove ${name}?`, body: `${name} will be removed and will not be able to read anything new. They could come back only with a new invitation.`, action: "Remove" }
          : { title: `Ban ${name}?`, body: `${name} will be removed, will not be able to read anything new, and can never rejoin. The invitation links they could know stop working.`, action: "Ban" };
    const work = (): Promise<void> => (pending.kind === "role" ? intents.setRole(space.slot, member.key, pending.role) : intents.remove(space.slot, member.key, pending.kind === "ban"));
    return <Confirm {...copy} busy={busy} error={error} onCancel={onClose} onConfirm={() => run(work())} />;
  }
  return (
    <Dialog title={member.name} onClose={onClose}>
      <div class="menu-list">
        {[...member.roles].reverse().map((role) => (
          <button key={role} type="button" class="menu-item" onClick={() => setPending({ kind: "role", role })}>Make {role}</button>
        ))}
        {member.role === "member"
          ? space.rooms.filter((room) => room.kind === "channel").map((room) => {
            const on = room.publishers.includes(member.key);
            return (
              <button key={room.id} type="button" class="menu-item" disabled={busy} onClick={() => run(intents.setPublisher(space.slot, room.id, member.key, !on))}>
                {on ? `Stop posting in ${room.name}` : `Let post in ${room.name}`}
              </button>
            );
          })
          : null}
        <button type="button" class="menu-item danger" onClick={() => setPending({ kind: "remove" })}>Remove from the space</button>
        <button type="button" class="menu-item danger" onClick={() => setPending({ kind: "ban" })}>Ban</button>
      </div>
      {error !== null ? <p class="error" role="alert">{error}</p> : null}
      <div class="dialog-actions"><button type="button" class="button" onClick={onClose}>Cancel</button></div>
    </Dialog>
  );
}
