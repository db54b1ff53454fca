"""The web client's protocol modules, checked by the Python implementation (issue 9).

The reverse of the known-answer vectors: ``web/scripts/run_ts.mjs interop`` runs the TypeScript
modules of ``web/src/protocol/`` with fresh random keys and writes what they make (a record
chain, an invite seal and preview, a room-key envelope, a chat message, a story, SFrame
media frames, a call action, a media-key signal) with the secrets a verifier needs; each is
then opened and verified here with the real Python code, and refused with one bit flipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from client.call import keys as callkeys
from client.call import sframe
from client.call import signalling as callsignal
from client.call.e2ee_media import MEDIA_SUITE
from client.core import chatcrypto, crypto
from client.core.errors import VerificationError
from client.core.invites import parse_invite_link
from client.core.rooms import RoomName
from client.core.space import ProfileInfo, SealedSpaceKey, SpaceInfo, key_fits_chain, open_preview
from protocol import records as rec
from protocol import roomkeys, wire
from protocol.conference_rules import action_problem, seat_flags
from protocol.conference_wire import CallAction, CallJoined
from protocol.errors import ProtocolError

pytestmark = [pytest.mark.timeout(120), pytest.mark.e2e]

WEB = Path(__file__).resolve().parent.parent / "web"


def b(text: str) -> bytes:
    return bytes.fromhex(text)


def flip(data: bytes, index: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1
    return bytes(out)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the TypeScript modules made, as JSON (byte strings hex)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        # make test needs them anyway (web-test) and .ci/run installs them: a missing Node.js
        # must fail this cross-check, not let it silently vanish.
        pytest.fail("node and npm are needed to run the web client's modules")
    if not (WEB / "node_modules").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=100,
        )
        if done.returncode != 0 or not (WEB / "node_modules").is_dir():
            pytest.fail(f"web/node_modules is missing and npm ci failed: {done.stderr[-500:]}")
    out = tmp_path_factory.mktemp("interop") / "interop.json"
    subprocess.run(
        ["node", "scripts/run_ts.mjs", "interop", str(out)], cwd=WEB, check=True, timeout=60
    )
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


def _person(made: dict[str, Any], who: str) -> dict[str, bytes]:
    return {k: b(v) for k, v in made[who].items()}


def _records(made: dict[str, Any]) -> list[rec.Record]:
    return [rec.decode_record(b(r)) for r in made["records"]]


def test_identities(made: dict[str, Any]) -> None:
    for who in ("owner", "member"):
        person = _person(made, who)
        assert crypto.public_signing_key(person["signing_seed"]) == person["member_key"]
        assert crypto.public_box_key(person["box_secret"]) == person["box_key"]


def test_record_chain(made: dict[str, Any]) -> None:
    space_id = made["space_id"]
    records = _records(made)
    for record, raw in zip(records, made["records"], strict=True):
        assert rec.encode_record(record).hex() == raw  # the TS encoding is msgspec's
    owner, member = _person(made, "owner"), _person(made, "member")
    genesis = records[0].body
    assert isinstance(genesis, rec.Genesis)
    assert rec.derive_space_id(owner["member_key"], genesis) == space_id
    roster = rec.Roster.from_records(space_id, records)
    assert (roster.head_seq, roster.head_hash.hex()) == (made["head_seq"], made["head_hash"])
    assert {k: m.role for k, m in roster.members.items()} == {
        owner["member_key"]: "owner",
        member["member_key"]: "member",
    }
    assert roster.members[member["member_key"]].box_key == member["box_key"]
    link = parse_invite_link(made["invite"]["link"])
    join = next(r.body for r in records if isinstance(r.body, rec.Join))
    assert join.invite_id == link.invite_id
    statement = rec.join_statement(
        space_id, member["member_key"], member["box_key"], join.invite_id
    )
    assert rec.verify_signature(link.invite_key, statement, join.invite_sig)
    room = made["room"]
    assert room["room_id"] in roster.rooms
    assert roster.room_generation(room["room_id"]) == room["generation"]
    commit = roster.room_keys[(room["room_id"], room["epoch"], room["generation"])][0]
    room_key = b(room["room_key"])
    assert commit == roomkeys.key_commitment(
        space_id, room["room_id"], room["epoch"], room["generation"], room_key
    )
    assert roomkeys.advance(b(room["room_key_0"]), space_id, room["room_id"], 0, 0, 1) == room_key
    # The boxes open under the space key, as the Python client's types.
    space_key = b(made["space_key"])
    assert key_fits_chain(roster, 0, space_key)
    kinds = {rec.SpaceMeta: SpaceInfo, rec.Profile: ProfileInfo}
    for record in records:
        body = record.body
        if isinstance(body, rec.SpaceMeta | rec.Profile):
            msgspec.msgpack.decode(
                crypto.secretbox_open(space_key, body.box), type=kinds[type(body)]
            )
        elif isinstance(body, rec.RoomCreate):
            name = crypto.secretbox_open(space_key, body.name_box)
            assert msgspec.msgpack.decode(name, type=RoomName).name == "general"
    assert roster.meta is not None
    info = msgspec.msgpack.decode(crypto.secretbox_open(space_key, roster.meta.box), type=SpaceInfo)
    assert info.name == "Interop space"


@pytest.mark.parametrize("seq", range(8))
def test_record_chain_refuses_a_flipped_byte(made: dict[str, Any], seq: int) -> None:
    records = _records(made)
    assert len(records) == 8
    records[seq] = msgspec.structs.replace(records[seq], sig=flip(records[seq].sig))
    with pytest.raises(ProtocolError):
        rec.Roster.from_records(made["space_id"], records)
    # a byte inside the encoded record (its author key): it decodes, and is refused
    records = _records(made)
    data = b(made["records"][seq])
    records[seq] = rec.decode_record(flip(data, data.index(records[seq].author) + 5))
    with pytest.raises(ProtocolError):
        rec.Roster.from_records(made["space_id"], records)


def test_invite_seal_and_preview(made: dict[str, Any]) -> None:
    space_id = made["space_id"]
    link = parse_invite_link(made["invite"]["link"])
    assert str(link) == made["invite"]["link"]
    seal = msgspec.msgpack.decode(b(made["invite"]["seal_msgpack"]), type=wire.InviteSeal)
    assert wire.encoder.encode(seal).hex() == made["invite"]["seal_msgpack"]
    assert seal.invite_id == link.invite_id
    records = _records(made)
    invite = records[made["invite"]["invite_head_seq"]].body
    assert isinstance(invite, rec.InviteCreate) and invite.invite_key == link.invite_key
    preview = open_preview(link, space_id, seal.preview)
    assert (preview.name, preview.inviter) == ("Interop space", "Owner")
    with pytest.raises(VerificationError):
        open_preview(link, "anotherspace", seal.preview)
    with pytest.raises(VerificationError):
        open_preview(link, space_id, flip(seal.preview, 30))
    # what join_space does with Joined.seal, then key_fits_chain on the verified chain
    plain = crypto.secretbox_open(link.seal_key, seal.sealed, "the invite")
    sealed = msgspec.msgpack.decode(plain, type=SealedSpaceKey)
    assert (sealed.space_id, sealed.epoch, sealed.key.hex()) == (space_id, 0, made["space_key"])
    roster = rec.Roster.from_records(space_id, records)
    assert key_fits_chain(roster, sealed.epoch, sealed.key)
    with pytest.raises(VerificationError):
        crypto.secretbox_open(link.seal_key, flip(seal.sealed, 30))
    with pytest.raises(VerificationError):
        crypto.secretbox_open(link.preview_key, seal.sealed)


def test_room_key_envelope(made: dict[str, Any]) -> None:
    owner, member = _person(made, "owner"), _person(made, "member")
    room = made["room"]
    envelope = msgspec.msgpack.decode(b(made["envelope_msgpack"]), type=wire.Envelope)
    assert msgspec.msgpack.encode(envelope).hex() == made["envelope_msgpack"]
    assert (envelope.recipient, envelope.sender) == (member["member_key"], owner["member_key"])
    roster = rec.Roster.from_records(made["space_id"], _records(made))
    args = (member["box_secret"], owner["box_key"])
    sealed = crypto.open_key(*args, envelope.box, made["space_id"], envelope.scope, envelope.epoch)
    assert (sealed.generation, sealed.key.hex()) == (room["generation"], room["room_key"])
    # the room was made after the join: the member may hold every generation of the epoch
    assert sealed.generation >= roster.member_generation(room["room_id"], member["member_key"])
    with pytest.raises(VerificationError):
        crypto.open_key(*args, flip(envelope.box, 30), made["space_id"], envelope.scope, 0)
    with pytest.raises(VerificationError):  # relabelled
        crypto.open_key(*args, envelope.box, made["space_id"], envelope.scope, 1)


def test_chat_message(made: dict[str, Any]) -> None:
    case, room = made["message"], made["room"]
    space_id, room_id, epoch, sender, client_id, ttl = case["header"]
    header = chatcrypto.MessageHeader(space_id, room_id, epoch, b(sender), b(client_id), ttl)
    generation, box = roomkeys.unframe(b(case["framed"]))
    assert generation == room["generation"]
    roster = rec.Roster.from_records(made["space_id"], _records(made))
    assert roster.room_generation(room_id) == generation
    room_key = b(room["room_key"])
    content = chatcrypto.open_message(room_key, header, box)
    assert (content.text, content.created_at) == (case["text"], case["created_at"])
    assert (content.head, content.head_hash.hex()) == (made["head_seq"], made["head_hash"])
    statement = chatcrypto.message_statement(
        header, content.text, content.created_at, content.head, content.head_hash
    )
    assert rec.verify_signature(header.sender, statement, content.sig)
    for bad_box, bad_header in (
        (flip(box, 30), header),
        (box, header._replace(ttl=60)),
        (box, header._replace(sender=_person(made, "owner")["member_key"])),
    ):
        with pytest.raises(VerificationError):
            chatcrypto.open_message(room_key, bad_header, bad_box)


def test_story(made: dict[str, Any]) -> None:
    case, room = made["story"], made["room"]
    space_id, room_id, epoch, sender, story_id, ttl = case["header"]
    header = chatcrypto.StoryHeader(space_id, room_id, epoch, b(sender), story_id, ttl)
    room_key = b(room["room_key"])
    generation, meta_box = roomkeys.unframe(b(case["meta_framed"]))
    assert generation == room["generation"]
    meta = chatcrypto.open_story_meta(room_key, header, meta_box)
    assert (meta.caption, [meta.width, meta.height]) == (case["caption"], case["size"])
    assert (meta.head, meta.head_hash.hex()) == (made["head_seq"], made["head_hash"])
    statement = chatcrypto.story_statement(header, meta)
    assert rec.verify_signature(header.sender, statement, meta.sig)
    for part in ("image", "thumb"):
        opened = chatcrypto.open_story_part(room_key, header, meta, part, b(case[f"{part}_box"]))
        assert opened.hex() == case[part]
    with pytest.raises(VerificationError):
        chatcrypto.open_story_meta(room_key, header, flip(meta_box, 30))
    with pytest.raises(VerificationError):
        chatcrypto.open_story_part(room_key, header, meta, "thumb", b(case["image_box"]))


def test_sframe_frames(made: dict[str, Any]) -> None:
    case = made["sframe"]
    kid = callkeys.media_kid(case["index"], case["epoch"])
    assert kid == case["kid"]
    for frame in case["frames"]:
        protected = b(frame["protected"])
        ctx = sframe.SFrameContext(MEDIA_SUITE)
        ctx.add_key(kid, b(case["base_key"]), usage=sframe.KeyUsage.DECRYPT)
        got_kid, original = sframe.unprotect_frame(ctx, frame["codec"], protected)
        assert (got_kid, original.hex()) == (kid, frame["frame"])
        clear = 10 if frame["codec"] == "vp8" else 1
        header = sframe.decode_header(protected[clear:])
        assert (header.kid, header.ctr) == (kid, frame["ctr"])
        for index in (0, clear + 3, -1):
            fresh = sframe.SFrameContext(MEDIA_SUITE)
            fresh.add_key(kid, b(case["base_key"]), usage=sframe.KeyUsage.DECRYPT)
            with pytest.raises(sframe.SFrameError):
                sframe.unprotect_frame(fresh, frame["codec"], flip(protected, index))
        # under another sender's key id the frame is not opened
        other = sframe.SFrameContext(MEDIA_SUITE)
        other.add_key(
            callkeys.media_kid(case["index"] + 1, case["epoch"]),
            b(case["base_key"]),
            usage=sframe.KeyUsage.DECRYPT,
        )
        with pytest.raises(sframe.SFrameError):
            sframe.unprotect_frame(other, frame["codec"], protected)


def test_call_action(made: dict[str, Any]) -> None:
    owner, member = _person(made, "owner"), _person(made, "member")
    data = b(made["call"]["action_msgpack"])
    action = msgspec.msgpack.decode(data, type=CallAction)
    assert msgspec.msgpack.encode(action) == data
    assert (action.head_seq, action.head_hash.hex()) == (made["head_seq"], made["head_hash"])
    roles: dict[bytes, rec.Role] = {owner["member_key"]: "owner", member["member_key"]: "member"}
    where = {"space_id": action.space_id, "room_id": action.room_id, "call_id": action.call_id}
    assert action_problem(action, roles, **where) is None
    forged = msgspec.structs.replace(action, sig=flip(action.sig))
    assert action_problem(forged, roles, **where) == "its signature does not verify"
    moved = msgspec.structs.replace(action, target=owner["member_key"])
    assert action_problem(moved, roles, **where) == "its signature does not verify"


def test_media_key_signal(made: dict[str, Any]) -> None:
    owner, member = _person(made, "owner"), _person(made, "member")
    call = made["call"]
    context = callsignal.SignalContext(
        made["space_id"], made["room"]["room_id"], call["call_id"], owner["member_key"]
    )
    box = b(call["signal_box"])
    args = (owner["box_secret"], member["box_key"], member["member_key"])
    body = callsignal.open_signal(*args, box, context)
    assert (body.kind, body.sender, body.recipient) == (
        "media-key",
        member["member_key"],
        owner["member_key"],
    )
    joins = b(call["member_join_nonce"]), b(call["owner_join_nonce"])
    pair = joins if member["member_key"] < owner["member_key"] else joins[::-1]
    assert body.link == callsignal.link_id(*pair)
    media = msgspec.msgpack.decode(body.payload, type=callkeys.MediaKeyMessage)
    want = call["media_key"]
    assert (media.epoch, media.key.hex(), media.at_version) == (
        want["epoch"],
        want["key"],
        want["at_version"],
    )
    base = callkeys.SenderKey(made["sframe"]["epoch"], b(made["sframe"]["base_key"]))
    assert base.ratchet() == callkeys.SenderKey(media.epoch, media.key)
    with pytest.raises(callsignal.SignalRejected):
        callsignal.open_signal(*args, flip(box, 30), context)
    with pytest.raises(callsignal.SignalRejected):
        other = callsignal.SignalContext(
            context.space_id, context.room_id, "anothercall", context.me
        )
        callsignal.open_signal(*args, box, other)


def test_chat_frames(made: dict[str, Any]) -> None:
    """wire.ts's chat and story frames decode with msgspec and re-encode to the same bytes."""
    frames = made["chat_frames"]
    kinds = []
    for hex_frame, decoder in [(f, wire.client_decoder) for f in frames["client"]] + [
        (f, wire.server_decoder) for f in frames["server"]
    ]:
        message = decoder.decode(b(hex_frame))
        kinds.append(type(message).__name__)
        assert wire.encoder.encode(message).hex() == hex_frame
    assert kinds == [
        "SendMessage",
        "FetchMessages",
        "UploadStoryChunk",
        "PostStory",
        "ListStories",
        "FetchStoryPart",
        "MessageSent",
        "Messages",
        "MessagesAdded",
        "StoryChunkStored",
        "StoryPosted",
        "Stories",
        "StoryPart",
    ]


def test_conference_frames(made: dict[str, Any]) -> None:
    """conference_wire.ts's frames decode with msgspec, re-encode to the same bytes, and the
    signed actions inside them verify under protocol.conference_rules."""
    owner, member = _person(made, "owner"), _person(made, "member")
    frames = made["conference_frames"]
    decoded = []
    for hex_frame, decoder in [(f, wire.client_decoder) for f in frames["client"]] + [
        (f, wire.server_decoder) for f in frames["server"]
    ]:
        message = decoder.decode(b(hex_frame))
        decoded.append(message)
        assert wire.encoder.encode(message).hex() == hex_frame
    assert [type(m).__name__ for m in decoded] == [
        "GetCall",
        "JoinCall",
        "LeaveCall",
        "ActInCall",
        "SendCallSignal",
        "SfuOffer",
        "SfuView",
        "CallInfo",
        "CallJoined",
        "CallUpdate",
        "CallSignal",
        "CallEnded",
        "SfuAnswer",
        "CallSpeaker",
        "SfuReconnect",
    ]
    joined = next(m for m in decoded if isinstance(m, CallJoined))
    state = joined.state
    roles: dict[bytes, rec.Role] = {owner["member_key"]: "owner", member["member_key"]: "member"}
    where = {"space_id": made["space_id"], "room_id": state.room_id, "call_id": state.call_id}
    seat = state.participants[1]
    for action in (seat.join, seat.admission, seat.mute):
        assert action is not None and action_problem(action, roles, **where) is None
    assert seat.admission is not None and seat.admission.join_ref == seat.join.nonce
    flags = seat_flags(seat, LOBBY_ROOM, state.call_id, roles, lambda a: True)
    assert flags.admitted and flags.muted and not flags.host


LOBBY_ROOM = rec.RoomCreate("r", "conference", 0, b"", True, False, "auto")
