/**
 * The reverse of the vector tests (issue 9): with fresh random keys, build with the
 * TypeScript protocol modules alone a space's chain, an invite seal and preview, a room-key
 * envelope, a chat message, a story, SFrame media frames, a call action and a media-key
 * signal, and write them (with the secrets a verifier needs) as JSON for
 * tests/test_web_interop.py, which checks every item with the Python implementation.
 *
 * Run: node scripts/run_ts.mjs interop OUT.json (it bundles this file with esbuild).
 * Byte strings are lowercase hex in the JSON.
 */
import { writeFileSync } from "node:fs";
import { toHex, utf8 } from "../src/protocol/bytes.ts";
import { ed25519Sign, secretbox } from "../src/protocol/crypto.ts";
import { newMembership, randomBytes, type Membership } from "../src/protocol/identities.ts";
import { newId } from "../src/protocol/ids.ts";
import {
  encodeInviteSeal, formatInviteLink, inviteKey, invitePreviewKey, inviteSealKey, inviteSigningSeed, sealPreview,
  sealSpaceKey,
} from "../src/protocol/invites.ts";
import { ratchetSenderKey, encodeCallAction, encodeMediaKeyMessage, pairLink, sealSignal, signAction } from "../src/protocol/calls.ts";
import { sealMessage, sealStory } from "../src/protocol/messages.ts";
import {
  deriveSpaceId, encodeRecord, joinStatement, recordHash, signRecord, EMPTY_HEAD, type Head, type Record,
  type RecordBody,
} from "../src/protocol/records.ts";
import { advance, roomKeyCommit } from "../src/protocol/roomkeys.ts";
import { f, optional, struct, encodeStruct } from "../src/protocol/schema.ts";
import { encodeEnvelope, sealKey } from "../src/protocol/sealed.ts";
import { mediaKid, protectFrame, sframeKey } from "../src/protocol/sframe.ts";
import { encodeClientMessage, encodeServerMessage, type ClientMessage, type ServerMessage } from "../src/protocol/wire.ts";
import { fromCallAction, type CallState } from "../src/protocol/conference_wire.ts";

// The space-key box contents of PROTOCOL.md §9 (no TS module defines them yet).
const SPACE_INFO = struct("SpaceInfo", [f("name", "str"), f("description", "str")]);
const PROFILE_INFO = struct("ProfileInfo", [f("display_name", "str"), f("avatar", optional("bytes"))]);
const ROOM_NAME = struct("RoomName", [f("name", "str")]);

const out = process.argv[2];
if (out === undefined) {
  console.error("usage: interop OUT.json");
  process.exit(2);
}

const now = Math.floor(Date.now() / 1000);
const server = "https://interop.example";
const person = (m: Membership) => ({
  signing_seed: toHex(m.signingSeed), member_key: toHex(m.memberKey), box_secret: toHex(m.boxSecret),
  box_key: toHex(m.boxKey),
});

const owner = await newMembership();
const member = await newMembership();
const spaceKey = randomBytes(32);

// ---- the chain ----
const genesis = { type: "genesis", box_key: owner.boxKey, nonce: randomBytes(16) } as const;
const spaceId = await deriveSpaceId(owner.memberKey, genesis);
const records: Record[] = [];
let head: Head = EMPTY_HEAD;
async function append(author: Membership, body: RecordBody): Promise<Record> {
  const r = await signRecord(author.signingSeed, {
    space_id: spaceId, seq: head.seq + 1, prev: head.hash, author: author.memberKey, created_at: now, body,
  });
  records.push(r);
  head = { seq: r.seq, hash: await recordHash(r) };
  return r;
}
const box = async (value: unknown, def: typeof SPACE_INFO) => secretbox(spaceKey, encodeStruct(def, value), randomBytes(24));

const inviteId = newId();
const secret = randomBytes(32);
await append(owner, genesis);
await append(owner, { type: "meta", epoch: 0, box: await box({ name: "Interop space", description: "made by TS" }, SPACE_INFO) });
await append(owner, { type: "profile", epoch: 0, box: await box({ display_name: "Owner", avatar: null }, PROFILE_INFO) });
await append(owner, {
  type: "invite", invite_id: inviteId, invite_key: await inviteKey(secret, inviteId), role: "member",
  expires_at: now + 86400, max_uses: 3,
});
const inviteHead = head;
const statement = joinStatement(spaceId, member.memberKey, member.boxKey, inviteId);
await append(member, {
  type: "join", invite_id: inviteId, box_key: member.boxKey,
  invite_sig: await ed25519Sign(await inviteSigningSeed(secret, inviteId), statement),
});
await append(member, { type: "profile", epoch: 0, box: await box({ display_name: "Member", avatar: null }, PROFILE_INFO) });
const roomId = newId();
await append(owner, {
  type: "room", room_id: roomId, kind: "chat", epoch: 0, name_box: await box({ name: "general" }, ROOM_NAME),
  lobby: false, stage: false, topology: "auto", ttl: 0, history: "since-join",
});
// One join since the epoch began: the room's messages use generation 1.
const generation = 1;
const roomKey0 = randomBytes(32);
const roomKey = await advance(roomKey0, spaceId, roomId, 0, 0, generation);
await append(owner, {
  type: "room_key", room_id: roomId, epoch: 0, generation, commit: await roomKeyCommit(spaceId, roomId, 0, generation, roomKey),
});

// ---- invite seal and preview ----
const seal = {
  invite_id: inviteId, epoch: 0,
  sealed: await sealSpaceKey(await inviteSealKey(secret, inviteId), { space_id: spaceId, epoch: 0, key: spaceKey }, randomBytes(24)),
  preview: await sealPreview(
    await invitePreviewKey(secret, inviteId),
    { space_id: spaceId, name: "Interop space", description: "made by TS", inviter: "Owner" }, randomBytes(24),
  ),
};

// ---- the room key sealed to the member ----
const envelope = {
  scope: roomId, epoch: 0, recipient: member.memberKey, sender: owner.memberKey,
  box: await sealKey(owner.boxSecret, member.boxKey, { spaceId, scope: roomId, epoch: 0, generation, key: roomKey }),
};

// ---- a chat message and a story at the chain head ----
const clientId = randomBytes(16);
const message = {
  header: { spaceId, roomId, epoch: 0, sender: member.memberKey, clientId, ttl: 0 },
  text: "hello from TypeScript ✓", createdAt: now, head: head.seq, headHash: head.hash,
};
const framed = await sealMessage(message, member.signingSeed, roomKey, generation);
const storyId = newId();
const storyHeader = { spaceId, roomId, epoch: 0, sender: owner.memberKey, storyId, ttl: 86400 };
const image = utf8("\xff\xd8 an image from TS");
const thumb = utf8("a thumb from TS");
const story = await sealStory(
  storyHeader, { caption: "a TS caption", createdAt: now, head: head.seq, headHash: head.hash, width: 320, height: 240 },
  image, thumb, owner.signingSeed, roomKey, generation,
);

// ---- SFrame media ----
const mediaBase = { epoch: 4, key: randomBytes(32) };
const index = 3;
const kid = mediaKid(index, mediaBase.epoch);
const sk = await sframeKey(mediaBase.key, kid);
const keyframe = new Uint8Array([0x50, 0x15, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, ...utf8("TS keyframe payload")]);
const opus = new Uint8Array([0x78, ...utf8("TS opus payload")]);
const frames = [
  { codec: "vp8", ctr: 77, frame: keyframe, protected: await protectFrame(sk, 77, "vp8", keyframe) },
  { codec: "opus", ctr: 300, frame: opus, protected: await protectFrame(sk, 300, "opus", opus) },
];

// ---- a call action and a media-key signal ----
const callId = newId();
const action = await signAction({
  spaceId, roomId, callId, actor: owner.memberKey, action: "mute", target: member.memberKey, issuedAt: now * 1000,
  nonce: randomBytes(16), headSeq: head.seq, headHash: head.hash, joinRef: new Uint8Array(0),
}, owner.signingSeed);
const ownerJoin = randomBytes(16);
const memberJoin = randomBytes(16);
const next = await ratchetSenderKey(mediaBase);
const signalBody = {
  spaceId, roomId, callId, sender: member.memberKey, recipient: owner.memberKey, kind: "media-key" as const,
  link: await pairLink(member.memberKey, memberJoin, owner.memberKey, ownerJoin), attempt: 0,
  payload: encodeMediaKeyMessage({ epoch: next.epoch, key: next.key, atVersion: 5 }),
};
const signal = await sealSignal(signalBody, member.signingSeed, member.boxSecret, owner.boxKey);

const json = {
  server,
  space_id: spaceId,
  owner: person(owner),
  member: person(member),
  space_key: toHex(spaceKey),
  records: records.map((r) => toHex(encodeRecord(r))),
  head_seq: head.seq,
  head_hash: toHex(head.hash),
  invite: {
    link: formatInviteLink({ server, inviteId, secret }),
    invite_head_seq: inviteHead.seq,
    seal_msgpack: toHex(encodeInviteSeal(seal)),
  },
  room: { room_id: roomId, epoch: 0, generation, room_key: toHex(roomKey), room_key_0: toHex(roomKey0) },
  envelope_msgpack: toHex(encodeEnvelope(envelope)),
  message: {
    header: [spaceId, roomId, 0, toHex(member.memberKey), toHex(clientId), 0],
    text: message.text, created_at: now, framed: toHex(framed),
  },
  story: {
    header: [spaceId, roomId, 0, toHex(owner.memberKey), storyId, 86400],
    caption: "a TS caption", size: [320, 240], meta_framed: toHex(story.metaFramed),
    image_box: toHex(story.imageBox), thumb_box: toHex(story.thumbBox), image: toHex(image), thumb: toHex(thumb),
  },
  sframe: {
    base_key: toHex(mediaBase.key), epoch: mediaBase.epoch, index, kid,
    frames: frames.map((x) => ({ codec: x.codec, ctr: x.ctr, frame: toHex(x.frame), protected: toHex(x.protected) })),
  },
  call: {
    call_id: callId,
    action_msgpack: toHex(encodeCallAction(action)),
    owner_join_nonce: toHex(ownerJoin), member_join_nonce: toHex(memberJoin),
    signal_box: toHex(signal),
    media_key: { epoch: next.epoch, key: toHex(next.key), at_version: 5 },
  },
};
// ---- chat and story frames (§11.3, §12) as wire.ts encodes them ----
const chatMessage = {
  seq: 4, sender: member.memberKey, client_id: clientId, epoch: 0, ttl: 60, sent_at: now + 0.25, expires_at: now + 60.25,
  box: framed,
};
const storyInfo = {
  story_id: storyId, room_id: roomId, sender: owner.memberKey, epoch: 0, ttl: 86400, posted_at: now + 0.5,
  expires_at: now + 86400.5, meta: story.metaFramed, image_size: story.imageBox.length, thumb_size: story.thumbBox.length,
};
const clientFrames: ClientMessage[] = [
  { type: "send_message", id: 1, room_id: roomId, client_id: clientId, epoch: 0, ttl: 60, box: framed },
  { type: "fetch_messages", id: 2, room_id: roomId, after: 3, limit: 500, follow: true },
  { type: "upload_story_chunk", id: 3, story_id: storyId, offset: 0, data: story.imageBox },
  {
    type: "post_story", id: 4, room_id: roomId, story_id: storyId, epoch: 0, ttl: 86400, meta: story.metaFramed,
    thumb: story.thumbBox, image_size: story.imageBox.length,
  },
  { type: "list_stories", id: 5, room_id: roomId },
  { type: "fetch_story_part", id: 6, story_id: storyId, part: "thumb", offset: 0 },
];
const serverFrames: ServerMessage[] = [
  { type: "message_sent", id: 1, room_id: roomId, seq: 4, sent_at: now + 0.25, expires_at: null, duplicate: true },
  { type: "messages", id: 2, room_id: roomId, messages: [chatMessage, { ...chatMessage, seq: 5, expires_at: null }], last_seq: 5 },
  { type: "messages_added", room_id: roomId, messages: [chatMessage] },
  { type: "story_chunk_stored", id: 3, story_id: storyId, size: story.imageBox.length },
  { type: "story_posted", id: 4, story_id: storyId, posted_at: now + 0.5, expires_at: now + 86400.5, duplicate: false },
  { type: "stories", id: 5, room_id: roomId, stories: [storyInfo] },
  { type: "story_part", id: 6, story: storyInfo, part: "thumb", offset: 0, total: story.thumbBox.length, data: story.thumbBox },
];
(json as { [key: string]: unknown })["chat_frames"] = {
  client: clientFrames.map((m) => toHex(encodeClientMessage(m))),
  server: serverFrames.map((m) => toHex(encodeServerMessage(m))),
};
// ---- conference frames (§13) as wire.ts encodes them ----
const ownerJoinAction = await signAction({
  spaceId, roomId, callId, actor: owner.memberKey, action: "join", target: owner.memberKey, issuedAt: now * 1000,
  nonce: ownerJoin, headSeq: head.seq, headHash: head.hash, joinRef: new Uint8Array(0),
}, owner.signingSeed);
const memberJoinAction = await signAction({
  spaceId, roomId, callId, actor: member.memberKey, action: "join", target: member.memberKey, issuedAt: now * 1000,
  nonce: memberJoin, headSeq: head.seq, headHash: head.hash, joinRef: new Uint8Array(0),
}, member.signingSeed);
const admit = await signAction({
  spaceId, roomId, callId, actor: owner.memberKey, action: "admit", target: member.memberKey, issuedAt: now * 1000,
  nonce: randomBytes(16), headSeq: head.seq, headHash: head.hash, joinRef: memberJoin,
}, owner.signingSeed);
const w = fromCallAction;
const callState: CallState = {
  room_id: roomId, call_id: callId, version: 7, topology: "sfu", requested_topology: "auto",
  participants: [
    { member: owner.memberKey, index: 0, status: "joined", join: w(ownerJoinAction), admission: null, mute: null, hand: null,
      stage: null },
    { member: member.memberKey, index: 1, status: "joined", join: w(memberJoinAction), admission: w(admit), mute: w(action),
      hand: null, stage: null },
  ],
  lock: null, bans: [],
};
const conferenceClient: ClientMessage[] = [
  { type: "get_call", id: 1, room_id: roomId },
  { type: "join_call", id: 2, room_id: roomId, join: w(memberJoinAction) },
  { type: "leave_call", id: 3, room_id: roomId },
  { type: "act_in_call", id: 4, room_id: roomId, action: w(admit) },
  { type: "send_call_signal", id: 5, room_id: roomId, call_id: callId, to: owner.memberKey, box: signal },
  { type: "sfu_offer", id: 6, room_id: roomId, call_id: callId, sdp: "v=0\r\n" },
  { type: "sfu_view", id: 7, room_id: roomId, call_id: callId, slots: [{ mid: "3", height: 1080 }, { mid: "4", height: 0 }] },
];
const conferenceServer: ServerMessage[] = [
  { type: "call_info", id: 1, state: { ...callState, participants: [], version: 0 } },
  { type: "call_joined", id: 2, state: callState, status: "joined" },
  { type: "call_update", state: callState, action: w(action) },
  { type: "call_signal", room_id: roomId, call_id: callId, sender: member.memberKey, box: signal },
  { type: "call_ended", room_id: roomId, call_id: callId, reason: "ended", action: null },
  { type: "sfu_answer", id: 6, sdp: "v=0\r\n" },
  { type: "call_speaker", room_id: roomId, call_id: callId, member: member.memberKey },
  { type: "sfu_reconnect", room_id: roomId, call_id: callId, reason: "the node went away" },
];
(json as { [key: string]: unknown })["conference_frames"] = {
  client: conferenceClient.map((m) => toHex(encodeClientMessage(m))),
  server: conferenceServer.map((m) => toHex(encodeServerMessage(m))),
};
writeFileSync(out, JSON.stringify(json, null, 2) + "\n");
