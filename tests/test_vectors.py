"""The known-answer vectors in protocol/vectors/ (docs/PROTOCOL.md).

Two kinds of check: the files are exactly what the implementation produces from the fixed
inputs (``make vectors`` rewrites them after a deliberate format change), and each vector,
read from the JSON alone, opens or verifies with the real functions — and is refused with one
bit flipped, the way a second implementation must refuse it.
"""

from __future__ import annotations

import hashlib
import json
import typing
from typing import Any

import msgspec
import pytest
from vectors_gen import BUILDERS, VECTOR_DIR, build_all, dump

from client.call import keys as callkeys
from client.call import sframe
from client.call import signalling as callsignal
from client.call.e2ee_media import MEDIA_SUITE
from client.core import chatcrypto, crypto
from client.core.errors import VerificationError
from client.core.invites import parse_invite_link
from client.core.space import InvitePreview, ProfileInfo, SealedSpaceKey, SpaceInfo, open_preview
from protocol import labels, media_keys, roomkeys, wire
from protocol import records as rec
from protocol.chat_wire import PostStory, SendMessage
from protocol.conference_rules import action_problem
from protocol.conference_wire import CallAction, action_signing_bytes
from protocol.errors import ErrorCode, ProtocolError
from protocol.ids import ID_PATTERN, is_valid_id
from sfu import rtp


def test_labels_live_in_protocol_labels() -> None:
    """Every protocol label is defined once, in protocol/labels.py (docs/PROTOCOL.md §3)."""
    root = VECTOR_DIR.parent.parent
    stray = [
        f"{path.relative_to(root)}:{n}"
        for package in ("protocol", "client", "spaces", "sfu", "rtc")
        for path in sorted((root / package).rglob("*.py"))
        if path.name != "labels.py" and path.name != "keystore.py"  # keystore: local only
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ('b"salon/' in line or '"salon/' in line or "SFrame 1.0" in line)
        and not line.lstrip().startswith("#")
        and "``" not in line  # docstrings naming a label
    ]
    assert not stray, f"labels outside protocol/labels.py: {stray}"


def test_protocol_doc_names_every_message_label_and_code() -> None:
    """docs/PROTOCOL.md keeps up with protocol/: every frame and record tag, every label and
    every error code appears in it (a new one needs its section)."""
    doc = (VECTOR_DIR.parent.parent / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    tags = [
        t.__struct_config__.tag
        for union in (wire.ClientMessage, wire.ServerMessage, rec.RecordBody)
        for t in typing.get_args(union)
    ]
    names = [n for n in vars(labels) if n.isupper()]
    wanted = [f"`{x}`" for x in [*tags, *names, *(c.value for c in ErrorCode)]]
    assert not [x for x in wanted if x not in doc], "add these to docs/PROTOCOL.md"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTOR_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return data


def b(text: str) -> bytes:
    return bytes.fromhex(text)


def flip(data: bytes, index: int = -1) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


@pytest.fixture(scope="module")
def people() -> dict[str, dict[str, bytes]]:
    raw = load("identities")["people"]
    return {name: {k: b(v) for k, v in p.items() if k != "fingerprint"} for name, p in raw.items()}


def test_files_are_what_the_implementation_produces() -> None:
    built = build_all()
    assert sorted(built) == sorted(BUILDERS)
    stale = [n for n, v in built.items() if (VECTOR_DIR / f"{n}.json").read_text() != dump(v)]
    assert not stale, f"protocol/vectors out of date: {stale}; run 'make vectors'"


def test_wire_encoding_round_trips() -> None:
    vectors = load("wire")
    for side, decoder in (("client", wire.client_decoder), ("server", wire.server_decoder)):
        for case in vectors[side]:
            data = b(case["msgpack"])
            message = decoder.decode(data)
            assert wire.encoder.encode(message) == data
            assert msgspec.msgpack.decode(data)["type"] == case["message"]["type"]
            assert next(iter(msgspec.msgpack.decode(data))) == "type"


def test_identities() -> None:
    for person in load("identities")["people"].values():
        assert crypto.public_signing_key(b(person["signing_seed"])).hex() == person["member_key"]
        assert crypto.public_box_key(b(person["box_secret"])).hex() == person["box_key"]
        assert rec.fingerprint(b(person["member_key"])) == person["fingerprint"]


def _records(vectors: dict[str, Any]) -> list[rec.Record]:
    return [rec.decode_record(b(r["record_msgpack"])) for r in vectors["records"]]


def test_record_chain_verifies() -> None:
    vectors = load("records")
    records = _records(vectors)
    for record, case in zip(records, vectors["records"], strict=True):
        assert rec.encode_record(record).hex() == case["record_msgpack"]
        assert rec.signing_bytes(record).hex() == case["signing_bytes"]
        assert rec.record_hash(record).hex() == case["record_hash"]
        assert rec.verify_signature(record.author, b(case["signing_bytes"]), b(case["sig"]))
    genesis = records[0].body
    assert isinstance(genesis, rec.Genesis)
    assert rec.derive_space_id(records[0].author, genesis) == vectors["space_id"]
    roster = rec.Roster.from_records(vectors["space_id"], records)
    summary = vectors["roster"]
    assert roster.head_seq == summary["head_seq"]
    assert roster.head_hash.hex() == summary["head_hash"]
    assert roster.epoch == summary["epoch"]
    assert {k.hex(): m.role for k, m in roster.members.items()} == summary["members"]
    assert {k.hex(): v for k, v in roster.departed.items()} == summary["departed"]
    for join in vectors["joins"]:
        signing_seed = b(join["invite_signing_seed"])
        assert crypto.public_signing_key(signing_seed).hex() == join["invite_key"]


RECORD_COUNT = len(json.loads((VECTOR_DIR / "records.json").read_text())["records"])


@pytest.mark.parametrize("seq", range(RECORD_COUNT))
def test_record_chain_refuses_a_flipped_signature(seq: int) -> None:
    vectors = load("records")
    records = _records(vectors)
    records[seq] = msgspec.structs.replace(records[seq], sig=flip(records[seq].sig))
    with pytest.raises(ProtocolError):
        rec.Roster.from_records(vectors["space_id"], records)


def test_record_chain_refuses_a_flipped_body_bit() -> None:
    vectors = load("records")
    data = b(vectors["records"][4]["record_msgpack"])
    records = _records(vectors)
    # a bit inside Bob's box key: still decodes, no longer matches the signature
    index = data.index(records[4].body.box_key)  # type: ignore[union-attr]
    records[4] = rec.decode_record(flip(data, index))
    with pytest.raises(rec.RecordError, match="bad signature"):
        rec.Roster.from_records(vectors["space_id"], records)


def test_rejected_records() -> None:
    vectors = load("records")
    records = _records(vectors)
    for case in vectors["rejected"]:
        roster = rec.Roster.from_records(vectors["space_id"], records[: case["prefix"]])
        with pytest.raises(ProtocolError) as caught:
            roster.apply(rec.decode_record(b(case["record_msgpack"])))
        assert type(caught.value).__name__ == case["error"], case["case"]
        assert caught.value.code == case["code"]


def test_auth_statements() -> None:
    vectors = load("auth")
    nonce = b(vectors["nonce"])
    challenge = wire.server_decoder.decode(b(vectors["challenge_msgpack"]))
    assert challenge == wire.Challenge(nonce, vectors["origin"])
    for case in vectors["statements"]:
        statement = wire.auth_statement(vectors["origin"], case["purpose"], case["subject"], nonce)
        assert statement.hex() == case["statement"]
        key, sig = b(case["public_key"]), b(case["signature"])
        assert rec.verify_signature(key, statement, sig)
        assert not rec.verify_signature(key, statement, flip(sig))
        assert not rec.verify_signature(key, flip(statement), sig)


def test_invite_derivations_and_seal() -> None:
    vectors = load("invites")
    link = parse_invite_link(vectors["link"])
    assert (link.server, link.invite_id, link.secret.hex()) == (
        vectors["server"],
        vectors["invite_id"],
        vectors["secret"],
    )
    assert link.signing_seed.hex() == vectors["signing_seed"]
    assert link.invite_key.hex() == vectors["invite_key"]
    assert link.seal_key.hex() == vectors["seal_key"]
    seal = vectors["seal"]
    sealed = b(seal["sealed"])
    assert sealed[:24].hex() == seal["nonce"]
    opened = crypto.secretbox_open(link.seal_key, sealed)
    assert opened.hex() == seal["plaintext_msgpack"]
    key = msgspec.msgpack.decode(opened, type=SealedSpaceKey)
    assert (key.space_id, key.epoch, key.key.hex()) == (
        seal["space_id"],
        seal["epoch"],
        seal["space_key"],
    )
    with pytest.raises(VerificationError):
        crypto.secretbox_open(link.seal_key, flip(sealed))
    assert link.preview_key.hex() == vectors["preview_key"]
    preview_box = b(seal["preview_box"])
    assert preview_box[:24].hex() == seal["preview_nonce"]
    opened = crypto.secretbox_open(link.preview_key, preview_box)
    assert opened.hex() == seal["preview_plaintext_msgpack"]
    preview = open_preview(link, seal["space_id"], preview_box)
    assert msgspec.to_builtins(preview) == seal["preview"]
    with pytest.raises(VerificationError):  # the preview key does not open the space key
        crypto.secretbox_open(link.preview_key, sealed)
    with pytest.raises(VerificationError):
        open_preview(link, "anotherspace", preview_box)
    both = msgspec.msgpack.decode(b(seal["invite_seal_msgpack"]), type=wire.InviteSeal)
    assert (both.sealed, both.preview) == (sealed, preview_box)


def test_invite_join_flow(people: dict[str, dict[str, bytes]]) -> None:
    """Open (preview and head, no key), join (a Join record on that head), joined (the seal)."""
    vectors = load("invites")
    link = parse_invite_link(vectors["link"])
    flow = vectors["join_flow"]
    frames = {f["frame"]: f for f in flow["frames"]}
    for frame in flow["frames"]:
        data = b(frame["msgpack"])
        decoder = wire.server_decoder if frame["frame"] in ("invite_opened", "joined") else None
        message = (decoder or wire.client_decoder).decode(data)
        assert wire.encoder.encode(message) == data
        assert message.__struct_config__.tag == frame["frame"]
    nonce = b(flow["nonce"])
    opened = wire.server_decoder.decode(b(frames["invite_opened"]["msgpack"]))
    assert isinstance(opened, wire.InviteOpened)
    preview = open_preview(link, opened.space_id, opened.preview)
    assert isinstance(preview, InvitePreview)
    join = wire.client_decoder.decode(b(frames["join_space"]["msgpack"]))
    assert isinstance(join, wire.JoinSpace) and isinstance(join.record.body, rec.Join)
    assert (join.record.seq, join.record.prev) == (opened.head_seq + 1, opened.head_hash)
    invite_statement = wire.auth_statement(flow["origin"], "invite", link.invite_id, nonce)
    assert invite_statement.hex() == flow["invite_statement"]
    assert rec.verify_signature(link.invite_key, invite_statement, join.invite_signature)
    member_statement = wire.auth_statement(flow["origin"], "member", opened.space_id, nonce)
    assert member_statement.hex() == flow["member_statement"]
    bob = people[flow["joiner"]]
    assert join.record.author == bob["member_key"]
    assert rec.verify_signature(join.record.author, member_statement, join.signature)
    assert not rec.verify_signature(join.record.author, member_statement, flip(join.signature))
    statement = rec.join_statement(
        opened.space_id, bob["member_key"], join.record.body.box_key, link.invite_id
    )
    assert rec.verify_signature(link.invite_key, statement, join.record.body.invite_sig)
    joined = wire.server_decoder.decode(b(frames["joined"]["msgpack"]))
    assert isinstance(joined, wire.Joined)
    assert joined.head_seq == join.record.seq and joined.space_id == opened.space_id
    key = msgspec.msgpack.decode(
        crypto.secretbox_open(link.seal_key, joined.seal.sealed), type=SealedSpaceKey
    )
    assert key.space_id == opened.space_id and key.key.hex() == vectors["seal"]["space_key"]


def test_space_key_boxes_rekey_and_envelope(people: dict[str, dict[str, bytes]]) -> None:
    vectors = load("space_keys")
    keys = {int(e): b(k) for e, k in vectors["space_keys"].items()}
    kinds: dict[str, type[msgspec.Struct]] = {"SpaceMeta": SpaceInfo, "Profile": ProfileInfo}
    for box in vectors["boxes"]:
        opened = crypto.secretbox_open(keys[box["epoch"]], b(box["box"]))
        assert opened.hex() == box["plaintext_msgpack"]
        if box["what"] in kinds:
            msgspec.msgpack.decode(opened, type=kinds[box["what"]])
        with pytest.raises(VerificationError):
            crypto.secretbox_open(keys[box["epoch"]], flip(b(box["box"])))
    rekey = vectors["rekey"]
    body = _records(load("records"))[rekey["seq"]].body
    assert isinstance(body, rec.Rekey)
    assert (body.epoch, body.prev_epoch, body.prev_box.hex()) == (
        rekey["epoch"],
        rekey["prev_epoch"],
        rekey["prev_box"],
    )
    assert crypto.secretbox_open(keys[body.epoch], body.prev_box) == keys[body.prev_epoch]
    with pytest.raises(VerificationError):
        crypto.secretbox_open(keys[body.prev_epoch], body.prev_box)
    repair = vectors["repair"]
    roster = rec.Roster.from_records(vectors["space_id"], _records(load("records")))
    assert roster.rekey_authors[1] == people["alice"]["member_key"]
    record = rec.decode_record(b(repair["record_msgpack"]))
    roster.apply(record)
    assert roster.epoch == repair["epoch"] and roster.rekeys[2].prev_epoch == repair["prev_epoch"]
    assert crypto.secretbox_open(keys[2], b(repair["prev_box"])) == keys[repair["prev_epoch"]]
    envelope = msgspec.msgpack.decode(
        b(vectors["envelope"]["envelope_msgpack"]), type=wire.Envelope
    )
    bob, alice = people["bob"], people["alice"]
    opened = crypto.open_from(bob["box_secret"], alice["box_key"], envelope.box)
    assert opened.hex() == vectors["envelope"]["sealed_key_msgpack"]
    sealed = crypto.open_key(
        bob["box_secret"], alice["box_key"], envelope.box, vectors["space_id"], "space", 1
    )
    assert (sealed.generation, sealed.key) == (0, keys[1])
    with pytest.raises(VerificationError):
        crypto.open_from(bob["box_secret"], alice["box_key"], flip(envelope.box))
    with pytest.raises(VerificationError):  # relabelled as another epoch
        crypto.open_key(
            bob["box_secret"], alice["box_key"], envelope.box, vectors["space_id"], "space", 2
        )


def test_room_key_envelopes_commitments_ratchet_framing(
    people: dict[str, dict[str, bytes]],
) -> None:
    vectors = load("room_keys")
    space_id, room_id, epoch = vectors["space_id"], vectors["room_id"], vectors["epoch"]
    keys = [b(vectors["room_key"])]
    for step in vectors["ratchet"]:
        g = step["generation"]
        assert g == len(keys)
        key = roomkeys.ratchet(keys[-1], space_id, room_id, epoch, g)
        assert key.hex() == step["key"]
        # the same as client.core.crypto.hkdf with the label and msgpack([space, room, epoch, g])
        label = labels.ROOM_KEY_RATCHET_LABEL
        info = b(step["info"])
        assert info[: len(label) + 1] == label.encode() + b"\x00"
        assert crypto.hkdf(keys[-1], label, info[len(label) + 1 :]) == key
        keys.append(key)
    assert roomkeys.advance(keys[0], space_id, room_id, epoch, 0, len(keys) - 1) == keys[-1]
    with pytest.raises(roomkeys.KeyBindingError):
        roomkeys.advance(keys[1], space_id, room_id, epoch, 1, 0)  # never backwards
    for case in vectors["commitments"]:
        g, key = case["generation"], b(case["key"])
        assert key == keys[g]
        commit = roomkeys.key_commitment(space_id, room_id, epoch, g, key)
        assert commit.hex() == case["commit"]
        assert hashlib.sha256(b(case["input"])).hexdigest() == case["commit"]
        assert roomkeys.key_commitment(space_id, room_id, epoch, g, flip(key)) != commit
    alice = people["alice"]
    for case in vectors["envelopes"]:
        person = people[case["recipient"]]
        envelope = msgspec.msgpack.decode(b(case["envelope_msgpack"]), type=wire.Envelope)
        assert envelope.box[:24].hex() == case["nonce"]
        plain = crypto.open_from(person["box_secret"], alice["box_key"], envelope.box)
        assert plain.hex() == case["sealed_key_msgpack"]
        sealed = crypto.open_key(
            person["box_secret"], alice["box_key"], envelope.box, space_id, room_id, epoch
        )
        assert (sealed.generation, sealed.key.hex()) == (case["generation"], case["key"])
        assert sealed.key == keys[sealed.generation]
        with pytest.raises(VerificationError):
            crypto.open_from(person["box_secret"], alice["box_key"], flip(envelope.box, 30))
        with pytest.raises(VerificationError):  # from someone else
            crypto.open_from(person["box_secret"], people["carol"]["box_key"], envelope.box)
        with pytest.raises(VerificationError):  # for another room
            crypto.open_key(
                person["box_secret"], alice["box_key"], envelope.box, space_id, "other", epoch
            )
    bob = people["bob"]
    relabelled = msgspec.msgpack.decode(
        b(vectors["relabelled"]["envelope_msgpack"]), type=wire.Envelope
    )
    crypto.open_from(bob["box_secret"], alice["box_key"], relabelled.box)  # it opens, but
    with pytest.raises(VerificationError, match="relabelled"):
        crypto.open_key(
            bob["box_secret"], alice["box_key"], relabelled.box, space_id, room_id, relabelled.epoch
        )
    framing = vectors["framing"]
    framed = roomkeys.frame(framing["generation"], b(framing["box"]))
    assert framed.hex() == framing["framed"]
    assert roomkeys.unframe(framed) == (framing["generation"], b(framing["box"]))
    with pytest.raises(roomkeys.KeyBindingError):
        roomkeys.unframe(framed[:3])


def _header(raw: list[Any]) -> chatcrypto.MessageHeader:
    space_id, room_id, epoch, sender, client_id, ttl = raw
    return chatcrypto.MessageHeader(space_id, room_id, epoch, b(sender), b(client_id), ttl)


def test_message_seal_open() -> None:
    vectors = load("messages")
    room_key, case = b(vectors["room_key"]), vectors["message"]
    head, head_hash = vectors["head"], b(vectors["head_hash"])
    records = _records(load("records"))
    assert rec.record_hash(records[head]) == head_hash
    header = _header(case["header"])
    assert chatcrypto.message_key(room_key, header.room_id).hex() == case["message_key"]
    assert chatcrypto.message_ad(header).hex() == case["ad"]
    send = wire.client_decoder.decode(b(case["send_message_msgpack"]))
    assert isinstance(send, SendMessage) and send.box.hex() == case["framed"]
    generation, box = roomkeys.unframe(send.box)
    assert generation == vectors["generation"] and box.hex() == case["box"]
    roster = rec.Roster.from_records(load("records")["space_id"], records)
    at = roster.at(head)
    assert at is not None and at.room_generation(header.room_id) == generation
    assert at.epoch == header.epoch == send.epoch
    content = chatcrypto.open_message(room_key, header, box)
    assert (content.text, content.created_at, content.head, content.head_hash) == (
        case["text"],
        case["created_at"],
        head,
        head_hash,
    )
    assert content.sig.hex() == case["sig"]
    statement = chatcrypto.message_statement(
        header, content.text, content.created_at, content.head, content.head_hash
    )
    assert statement.hex() == case["statement"]
    for bad_box, bad_header in (
        (flip(box), header),
        (flip(box, 30), header),
        (box, header._replace(epoch=header.epoch + 1)),
        (box, header._replace(ttl=60)),
        (box, header._replace(sender=b(load("identities")["people"]["alice"]["member_key"]))),
    ):
        with pytest.raises(VerificationError):
            chatcrypto.open_message(room_key, bad_header, bad_box)
    with pytest.raises(VerificationError):  # the key of another generation
        chatcrypto.open_message(
            roomkeys.ratchet(room_key, header.space_id, header.room_id, 0, generation + 1),
            header,
            box,
        )


def test_story_seal_open() -> None:
    vectors = load("messages")
    room_key, case = b(vectors["room_key"]), vectors["story"]
    space_id, room_id, epoch, sender, story_id, ttl = case["header"]
    header = chatcrypto.StoryHeader(space_id, room_id, epoch, b(sender), story_id, ttl)
    assert chatcrypto.story_key(room_key, room_id).hex() == case["story_key"]
    post = wire.client_decoder.decode(b(case["post_story_msgpack"]))
    assert isinstance(post, PostStory) and post.meta.hex() == case["meta_framed"]
    generation, meta_box = roomkeys.unframe(post.meta)
    assert generation == vectors["generation"] and meta_box.hex() == case["meta_box"]
    meta = chatcrypto.open_story_meta(room_key, header, meta_box)
    assert (meta.caption, [meta.width, meta.height]) == (case["caption"], case["size"])
    assert (meta.head, meta.head_hash.hex()) == (vectors["head"], vectors["head_hash"])
    assert chatcrypto.story_statement(header, meta).hex() == case["statement"]
    assert post.image_size == len(b(case["image_box"]))
    for part in ("image", "thumb"):
        opened = chatcrypto.open_story_part(room_key, header, meta, part, b(case[f"{part}_box"]))
        assert opened.hex() == case[part]
        with pytest.raises(VerificationError):
            chatcrypto.open_story_part(room_key, header, meta, part, flip(b(case[f"{part}_box"])))
    with pytest.raises(VerificationError):  # the image box does not open as the thumbnail
        chatcrypto.open_story_part(room_key, header, meta, "thumb", b(case["image_box"]))
    with pytest.raises(VerificationError):
        chatcrypto.open_story_meta(room_key, header, flip(meta_box))


def test_call_action_and_signal(people: dict[str, dict[str, bytes]]) -> None:
    vectors = load("calls")
    alice, bob = people["alice"], people["bob"]
    roles: dict[bytes, rec.Role] = {alice["member_key"]: "owner", bob["member_key"]: "member"}
    actions = {}
    for name in ("action", "join", "seat_action"):
        case = vectors[name]
        action = msgspec.msgpack.decode(b(case["action_msgpack"]), type=CallAction)
        assert action_signing_bytes(action).hex() == case["signing_bytes"]
        assert (action.head_seq, action.head_hash.hex()) == (
            vectors["head_seq"],
            vectors["head_hash"],
        )
        where = {"space_id": action.space_id, "room_id": action.room_id, "call_id": action.call_id}
        assert action_problem(action, roles, **where) is None
        forged = msgspec.structs.replace(action, sig=flip(action.sig))
        assert action_problem(forged, roles, **where) == "its signature does not verify"
        moved = msgspec.structs.replace(action, head_hash=flip(action.head_hash))
        assert action_problem(moved, roles, **where) == "its signature does not verify"
        actions[name] = action
    kick, join = actions["seat_action"], actions["join"]
    assert kick.join_ref == join.nonce and actions["action"].join_ref == b""
    where = {"space_id": kick.space_id, "room_id": kick.room_id, "call_id": kick.call_id}
    unbound = msgspec.structs.replace(kick, join_ref=b"")
    assert action_problem(unbound, roles, **where) in (
        "its signature does not verify",
        "it names no join",
    )

    signal = vectors["signal"]
    body = msgspec.msgpack.decode(b(signal["body_msgpack"]), type=callsignal.SignalBody)
    context = callsignal.SignalContext(
        body.space_id, body.room_id, body.call_id, alice["member_key"]
    )
    box = b(signal["box"])
    opened = callsignal.open_signal(
        alice["box_secret"], bob["box_key"], bob["member_key"], box, context
    )
    assert opened == body
    # Every signal, a media key too, names both current joins (the smaller member key offers).
    joins = b(signal["sender_join_nonce"]), b(signal["recipient_join_nonce"])
    pair = joins if bob["member_key"] < alice["member_key"] else joins[::-1]
    assert body.link == callsignal.link_id(*pair)
    with pytest.raises(callsignal.SignalRejected):
        callsignal.open_signal(
            alice["box_secret"], bob["box_key"], bob["member_key"], flip(box), context
        )
    with pytest.raises(callsignal.SignalRejected):  # replayed into another call
        other = callsignal.SignalContext(body.space_id, body.room_id, "another", context.me)
        callsignal.open_signal(alice["box_secret"], bob["box_key"], bob["member_key"], box, other)

    link = vectors["link_id"]
    nonces = b(link["offerer_join_nonce"]), b(link["answerer_join_nonce"])
    assert callsignal.link_id(*nonces).hex() == link["link"]


def test_media_keys_and_verification_code() -> None:
    vectors = load("calls")
    media = vectors["media_keys"]
    base = callkeys.SenderKey(0, b(media["base"]["key"]))
    assert base.commitment().hex() == media["base"]["commitment"]
    ratcheted = base.ratchet()
    assert (ratcheted.epoch, ratcheted.key.hex()) == (
        media["ratcheted"]["epoch"],
        media["ratcheted"]["key"],
    )
    assert ratcheted.commitment().hex() == media["ratcheted"]["commitment"]
    message = msgspec.msgpack.decode(
        b(media["media_key_message_msgpack"]), type=callkeys.MediaKeyMessage
    )
    assert message.key == ratcheted.key
    code = vectors["verification_code"]
    pairs = [(b(m), b(c)) for m, c in code["pairs"]]
    assert callkeys.verification_code(pairs) == code["code"]
    assert callkeys.verification_code(reversed(pairs)) == code["code"]  # order-free
    assert (
        callkeys.verification_code([(pairs[0][0], flip(pairs[0][1])), *pairs[1:]]) != code["code"]
    )


def test_sframe_kids_keys_and_frames() -> None:
    vectors = load("sframe")
    assert vectors["cipher_suite"] == int(MEDIA_SUITE)
    assert vectors["max_epoch"] == media_keys.MAX_EPOCH == (1 << vectors["epoch_bits"]) - 1
    for case in vectors["kids"]:
        assert callkeys.media_kid(case["index"], case["epoch"]) == case["kid"]
        assert media_keys.kid_index(case["kid"]) == case["index"]
        assert media_keys.kid_epoch(case["kid"]) == case["epoch"]
    for case in vectors["refused"]:  # never wrapped onto another key's id
        with pytest.raises(media_keys.KeyIdExhausted):
            media_keys.media_kid(case["index"], case["epoch"])
    key = vectors["key"]
    assert callkeys.media_kid(key["index"], key["epoch"]) == key["kid"]
    sframe_key, salt = sframe.derive_key_salt(MEDIA_SUITE, key["kid"], b(key["base_key"]))
    assert (sframe_key.hex(), salt.hex()) == (key["sframe_key"], key["sframe_salt"])
    for frame in vectors["frames"]:
        ctx = sframe.SFrameContext(MEDIA_SUITE)
        ctx.add_key(key["kid"], b(key["base_key"]), usage=sframe.KeyUsage.DECRYPT)
        protected = b(frame["protected"])
        kid, original = sframe.unprotect_frame(ctx, frame["codec"], protected)
        assert (kid, original.hex()) == (key["kid"], frame["frame"])
        assert len(protected) == len(original) + len(b(frame["sframe_header"])) + 16
        clear = {"vp8-keyframe": 10, "vp8-delta": 3, "opus": 1}[frame["name"]]
        assert protected[:clear] == original[:clear]
        assert protected[clear:].startswith(b(frame["sframe_header"]))
        header = sframe.decode_header(protected[clear:])
        assert (header.kid, header.ctr) == (key["kid"], frame["ctr"])
        for index in (0, clear + 3, -1):  # clear bytes, ciphertext, tag
            fresh = sframe.SFrameContext(MEDIA_SUITE)
            fresh.add_key(key["kid"], b(key["base_key"]), usage=sframe.KeyUsage.DECRYPT)
            with pytest.raises(sframe.SFrameError):
                sframe.unprotect_frame(fresh, frame["codec"], flip(protected, index))


def test_sfu_reads_key_ids_and_names_the_publisher() -> None:
    vectors = load("sfu_rtp")
    index = vectors["publisher_index"]
    for case in vectors["packets"]:
        data = b(case["packet"])
        header = rtp.parse_rtp(data)
        assert header is not None and header.payload_start == case["payload_start"]
        kid = rtp.sframe_kid(data, header, case["kind"] == "video")
        assert kid == case["sframe_kid"], case["case"]
        if kid >= 0:
            assert media_keys.kid_index(kid) == case["kid_index"]
        # Forwarded exactly when the frame's key id names the publisher.
        if kid >= 0:
            assert bool(case["forwarded"]) == (media_keys.kid_index(kid) == index), case["case"]
        elif kid == rtp.SFRAME_MALFORMED:
            assert not case["forwarded"]
        for out in map(b, case["forwarded"]):
            assert out[0] & 0x0F == 1  # one CSRC ...
            assert int.from_bytes(out[12:16], "big") == index == case["forwarded_csrc"]
            out_header = rtp.parse_rtp(out)
            assert out_header is not None
            # ... and the payload (descriptor, clear bytes, SFrame) untouched
            assert out[out_header.payload_start :] == data[header.payload_start :]
    assert vectors["dropped_kid"] == sum(1 for c in vectors["packets"] if not c["forwarded"])
    for frame in vectors["receiver"]:
        protected = b(frame["protected"])
        clear = 1 if frame["codec"] == "opus" else (10 if protected[0] & 0x01 == 0 else 3)
        kid = sframe.decode_header(protected[clear:]).kid
        assert kid == frame["kid"]
        assert (media_keys.kid_index(kid) == frame["slot_source"]) == frame["accepted"]


def test_id_examples() -> None:
    vectors = load("ids")
    assert vectors["pattern"] == ID_PATTERN.pattern
    for case in vectors["examples"]:
        assert is_valid_id(case["id"]) == case["valid"], case["id"]
    assert any(not c["valid"] and c["id"].startswith("-") for c in vectors["examples"])


def test_paged_records() -> None:
    """A continuation from a cached head: each page links to the head before it, the last
    one ends at the server's head."""
    paging = load("wire")["paging"]
    head_seq, head_hash = paging["cached_head_seq"], b(paging["cached_head_hash"])
    last: wire.Records | None = None
    for frame in paging["frames"]:
        data = b(frame["msgpack"])
        if frame["frame"] == "get_records":
            request = wire.client_decoder.decode(data)
            assert isinstance(request, wire.GetRecords) and request.after == head_seq
            continue
        page = wire.server_decoder.decode(data)
        assert isinstance(page, wire.Records) and wire.encoder.encode(page) == data
        assert page.records[0].seq == head_seq + 1 and page.records[0].prev == head_hash
        for before, after in zip(page.records, page.records[1:], strict=False):
            assert after.prev == rec.record_hash(before)
        head_seq, head_hash = page.records[-1].seq, rec.record_hash(page.records[-1])
        last = page
    assert last is not None and (head_seq, head_hash) == (last.head_seq, last.head_hash)


def test_roster_hash_retention() -> None:
    vectors = load("hashes")
    window, checkpoint = vectors["hash_window"], vectors["hash_checkpoint"]
    assert (window, checkpoint) == (rec.HASH_WINDOW, rec.HASH_CHECKPOINT)
    head = vectors["head_seq"]
    kept = [s for s in range(head + 1) if s > head - window or s % checkpoint == 0]
    first, last = vectors["kept_window"]
    assert kept == [*vectors["kept_checkpoints"], *range(first, last + 1)]
    assert len(kept) == vectors["kept_count"] and last == head
    assert sorted(map(int, vectors["checkpoint_hashes"])) == vectors["kept_checkpoints"]
