"""Known-answer vectors of the protocol, written to ``protocol/vectors/*.json``.

``make vectors`` (``python tests/vectors_gen.py``) rewrites them; ``tests/test_vectors.py``
recomputes every one with :func:`build_all` and checks the files match, then opens and
verifies each from the JSON alone (and refuses it with one bit flipped).

Nothing here is cryptography of its own: every value comes from the functions under test in
``protocol/`` and ``client/``, fed fixed seeds, clocks and nonces (the seal functions take an
optional ``nonce`` for this). The vectors are data, in ``protocol/vectors/`` next to the
protocol they describe; the generator lives here because it calls client code, which
``protocol/`` must never import.

Encoding in the JSON: byte strings are lowercase hex; ``*_msgpack`` fields are the exact
MessagePack bytes (hex) of a value, as signed, hashed or sent.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
from aiortc.rtp import RtpPacket

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: import this checkout's packages
    sys.path.insert(0, str(ROOT))

from client.call import keys as callkeys  # noqa: E402
from client.call import sframe  # noqa: E402
from client.call import signalling as callsignal  # noqa: E402
from client.call.e2ee_media import MEDIA_SUITE, _peek_kid  # noqa: E402
from client.core import chatcrypto, crypto  # noqa: E402
from client.core import space as client_space  # noqa: E402
from client.core.invites import InviteLink, parse_invite_link  # noqa: E402
from client.core.keystore import SpaceMembership  # noqa: E402
from client.core.rooms import RoomName  # noqa: E402
from protocol import (  # noqa: E402
    ice_wire,
    labels,
    media_keys,
    roomkeys,
    wire,
)
from protocol.chat_wire import PostStory, SendMessage  # noqa: E402
from protocol.conference_wire import (  # noqa: E402
    CallAction,
    SfuView,
    SlotView,
    action_signing_bytes,
)
from protocol.ids import ID_PATTERN, is_valid_id  # noqa: E402
from protocol.records import (  # noqa: E402
    HASH_CHECKPOINT,
    HASH_WINDOW,
    MAX_PROFILE_BOX,
    ChainConflict,
    Genesis,
    InviteCreate,
    Join,
    Profile,
    Record,
    RecordBody,
    RecordError,
    RecordForbidden,
    RecordTooLarge,
    Rekey,
    Remove,
    RoleChange,
    RoomCreate,
    RoomGrant,
    RoomKey,
    Roster,
    SpaceMeta,
    derive_space_id,
    encode_record,
    fingerprint,
    join_statement,
    record_hash,
    signing_bytes,
)
from rtc.aiortc_adapter import _source as rtp_source  # noqa: E402
from sfu import rtp  # noqa: E402
from sfu.forwarder import DownTrackSpec, Forwarder, ForwarderConfig, UpTrackSpec  # noqa: E402
from spaces.config import IceSection  # noqa: E402
from spaces.handlers import ice as spaces_ice  # noqa: E402

VECTOR_DIR = ROOT / "protocol" / "vectors"
CLOCK = 1_760_000_000  # every record's created_at, and "now" for the vectors
_enc = msgspec.msgpack.Encoder()


def fixed(name: str, size: int = 32) -> bytes:
    """A fixed, named input (seed, secret, nonce); the JSON lists its bytes."""
    return hashlib.sha256(b"salon-vector/" + name.encode()).digest()[:size]


def h(data: bytes) -> str:
    return data.hex()


def plain(value: Any) -> Any:
    """msgspec value -> JSON (bytes as hex)."""
    return _hexify(msgspec.to_builtins(value, builtin_types=(bytes,)))


def _hexify(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_hexify(v) for v in value]
    if isinstance(value, dict):
        return {k: _hexify(v) for k, v in value.items()}
    return value


# -- identities --------------------------------------------------------------------------------


class Person:
    """A member identity from fixed seeds: Ed25519 member key, X25519 box key."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.signing_seed = fixed(f"{name}/signing-seed")
        self.box_secret = fixed(f"{name}/box-secret")
        self.key = crypto.public_signing_key(self.signing_seed)
        self.box_key = crypto.public_box_key(self.box_secret)

    def membership(self, space_id: str) -> SpaceMembership:
        return SpaceMembership(space_id, SERVER, "", self.name, self.signing_seed, self.box_secret)

    def as_json(self) -> dict[str, Any]:
        return {
            "signing_seed": h(self.signing_seed),
            "member_key": h(self.key),
            "box_secret": h(self.box_secret),
            "box_key": h(self.box_key),
            "fingerprint": fingerprint(self.key),
        }


SERVER = "https://salon.example"
ALICE, BOB, CAROL = Person("alice"), Person("bob"), Person("carol")
PEOPLE = {"alice": ALICE, "bob": BOB, "carol": CAROL}
INVITE = InviteLink(SERVER, "inviteAAAAAAAAAA", fixed("invite/secret"))
SPACE_KEY_0 = fixed("space-key/0")
SPACE_KEY_1 = fixed("space-key/1")
SPACE_KEY_2 = fixed("space-key/2")
ORIGIN = "salon.example"  # the challenge origin of every signed auth statement here
ROOM_ID = "roomAAAAAAAAAAAA"
ROOM_KEY = fixed("room-key/0")  # the room's key of epoch 0, generation 0
ROOM_GENERATIONS = 3  # generations 0..2: Bob's join made 1, Carol's 2


def room_key_at(space_id: str, generation: int) -> bytes:
    """The room key of epoch 0 at ``generation`` (the HKDF ratchet of protocol.roomkeys)."""
    return roomkeys.advance(ROOM_KEY, space_id, ROOM_ID, 0, 0, generation)


def identities() -> dict[str, Any]:
    return {
        "about": "Ed25519 member key from its 32-byte seed, X25519 box key from its secret, "
        "fingerprint = hex(SHA-256(FINGERPRINT_DOMAIN || member_key))[:16]",
        "fingerprint_domain": h(labels.FINGERPRINT_DOMAIN),
        "people": {name: p.as_json() for name, p in PEOPLE.items()},
    }


# -- the record chain --------------------------------------------------------------------------


def _chain(person: Person, space_id: str, head: Roster | None, bodies: list[RecordBody]) -> Any:
    # chain() stamps records with time.time(): pin the clock so the signatures are fixed
    with mock.patch("time.time", return_value=float(CLOCK)):
        return client_space.chain(person.membership(space_id), space_id, head, bodies)


def _box(key: bytes, value: msgspec.Struct, nonce_name: str) -> bytes:
    return crypto.secretbox(key, _enc.encode(value), fixed(nonce_name, 24))


@functools.cache
def build_chain() -> tuple[str, list[Record], dict[str, Any]]:
    """A space: Alice founds it with an invite; Bob and Carol join; Alice adds a room and
    commits to its key at generations 0, 1, 2, makes Bob moderator, bans Carol and rekeys
    (epoch 0 -> 1); Bob renames himself at epoch 1. (Cached: callers must not mutate it.)"""
    genesis = Genesis(ALICE.box_key, fixed("genesis-nonce", 16))
    space_id = derive_space_id(ALICE.key, genesis)
    records: list[Record] = _chain(
        ALICE,
        space_id,
        None,
        [
            genesis,
            SpaceMeta(0, _box(SPACE_KEY_0, client_space.SpaceInfo("Vector space"), "meta")),
            Profile(0, _box(SPACE_KEY_0, client_space.ProfileInfo("Alice"), "profile/alice")),
            InviteCreate(INVITE.invite_id, INVITE.invite_key, "member", CLOCK + 86400, 5),
        ],
    )
    roster = Roster.from_records(space_id, records)
    for person in (BOB, CAROL):
        statement = join_statement(space_id, person.key, person.box_key, INVITE.invite_id)
        join = Join(INVITE.invite_id, person.box_key, crypto.sign(INVITE.signing_seed, statement))
        info = client_space.ProfileInfo(person.name.title())
        profile = Profile(0, _box(SPACE_KEY_0, info, f"profile/{person.name}"))
        records += _chain(person, space_id, roster, [join, profile])
        roster = Roster.from_records(space_id, records)
    name_box = _box(SPACE_KEY_0, RoomName("general"), "room-name")
    commits = [
        RoomKey(
            ROOM_ID,
            0,
            g,
            roomkeys.key_commitment(space_id, ROOM_ID, 0, g, room_key_at(space_id, g)),
        )
        # Generation 2 first, so the chain has a point where Alice made the key but has not
        # committed generation 1 yet (the "older than its join" refusal needs that).
        for g in (2, *range(ROOM_GENERATIONS - 1))
    ]
    records += _chain(
        ALICE,
        space_id,
        roster,
        [
            RoomCreate(ROOM_ID, "channel", 0, name_box, ttl=3600),
            *commits,
            RoomGrant(ROOM_ID, CAROL.key, True),
            RoleChange(BOB.key, "moderator"),
            Remove(CAROL.key, True),
        ],
    )
    roster = Roster.from_records(space_id, records)
    rekey = Rekey(1, 0, crypto.secretbox(SPACE_KEY_1, SPACE_KEY_0, fixed("rekey-prev-box", 24)))
    records += _chain(ALICE, space_id, roster, [rekey])
    roster = Roster.from_records(space_id, records)
    profile = Profile(1, _box(SPACE_KEY_1, client_space.ProfileInfo("Bob M."), "profile/bob/1"))
    records += _chain(BOB, space_id, roster, [profile])
    roster = Roster.from_records(space_id, records)
    summary = {
        "head_seq": roster.head_seq,
        "head_hash": h(roster.head_hash),
        "epoch": roster.epoch,
        "members": {h(m.key): m.role for m in roster.members.values()},
        "departed": {h(k): banned for k, banned in roster.departed.items()},
        "invite_uses": roster.invite_uses,
        "rooms": {
            rid: {
                "kind": r.spec.kind,
                "history": r.spec.history,
                "publishers": sorted(h(p) for p in r.publishers),
            }
            for rid, r in roster.rooms.items()
        },
        "generation": roster.generation,
        "room_keys": {
            f"{room}/{epoch}/{gen}": h(commit)
            for (room, epoch, gen), (commit, _) in sorted(roster.room_keys.items())
        },
        "hashes_kept": sorted(roster.hashes),
    }
    return space_id, records, summary


def _rejection(
    name: str,
    space_id: str,
    records: list[Record],
    prefix: int,
    bad: Record,
    error: type[Exception],
) -> dict[str, Any]:
    roster = Roster.from_records(space_id, records[:prefix])
    try:
        roster.apply(bad)
    except error as exc:
        reason = str(exc)
    else:  # pragma: no cover - the vector would be wrong
        raise AssertionError(f"{name}: the record was accepted")
    return {
        "case": name,
        "prefix": prefix,
        "record_msgpack": h(encode_record(bad)),
        "error": error.__name__,
        "code": str(getattr(error, "code", "")),
        "reason": reason,
    }


def rejections(space_id: str, records: list[Record]) -> list[dict[str, Any]]:
    """Records the roster rules refuse, each after ``prefix`` good records."""
    by_seq = {r.seq: r for r in records}
    roster_at = {n: Roster.from_records(space_id, records[:n]) for n in (4, 8)}
    flipped = bytearray(by_seq[4].sig)
    flipped[0] ^= 1
    wrong_join_sig = join_statement(space_id, CAROL.key, CAROL.box_key, "otherinvite1")
    late_join = Join(
        INVITE.invite_id,
        CAROL.box_key,
        crypto.sign(INVITE.signing_seed, wrong_join_sig),
    )
    (bob_invites,) = _chain(
        BOB,
        space_id,
        roster_at[8],
        [InviteCreate("bobinvite000", INVITE.invite_key, "member", CLOCK + 60, 1)],
    )
    (skip_epoch,) = _chain(ALICE, space_id, roster_at[8], [Rekey(2, 1, b"")])
    (prev_not_below,) = _chain(ALICE, space_id, roster_at[8], [Rekey(1, 1, b"")])
    (member_rekeys,) = _chain(BOB, space_id, roster_at[8], [Rekey(1, 0, b"")])
    (bob_kicks_alice,) = _chain(BOB, space_id, roster_at[8], [Remove(ALICE.key, False)])
    roster_at[9] = Roster.from_records(space_id, records[:9])  # the room, no commitment yet
    roster_at[12] = Roster.from_records(space_id, records[:12])  # generations 0..2 committed
    (second_commit,) = _chain(ALICE, space_id, roster_at[12], [RoomKey(ROOM_ID, 0, 1, bytes(32))])
    (future_generation,) = _chain(
        ALICE, space_id, roster_at[12], [RoomKey(ROOM_ID, 0, 3, bytes(32))]
    )
    big_profile = Profile(0, bytes(MAX_PROFILE_BOX + 1))
    (too_large,) = _chain(BOB, space_id, roster_at[8], [big_profile])
    dash_box = _box(SPACE_KEY_0, RoomName("dash"), "room-name/dash")
    (dash_room,) = _chain(
        ALICE, space_id, roster_at[8], [RoomCreate("-roomAAAAAAAAAAA", "chat", 0, dash_box)]
    )
    return [
        _rejection(
            "bad signature",
            space_id,
            records,
            4,
            msgspec.structs.replace(by_seq[4], sig=bytes(flipped)),
            RecordError,
        ),
        _rejection(
            "prev is not the head hash",
            space_id,
            records,
            4,
            msgspec.structs.replace(by_seq[4], prev=bytes(32)),
            ChainConflict,
        ),
        _rejection(
            "join signed for another invite id",
            space_id,
            records,
            6,
            _chain(CAROL, space_id, Roster.from_records(space_id, records[:6]), [late_join])[0],
            RecordForbidden,
        ),
        _rejection("a member invites", space_id, records, 8, bob_invites, RecordForbidden),
        _rejection("rekey skips an epoch", space_id, records, 8, skip_epoch, RecordError),
        _rejection(
            "rekey's prev_epoch is not below its epoch",
            space_id,
            records,
            8,
            prev_not_below,
            RecordError,
        ),
        _rejection(
            "a plain member rekeys with no departure pending",
            space_id,
            records,
            8,
            member_rekeys,
            RecordForbidden,
        ),
        _rejection("a room id begins with '-'", space_id, records, 8, dash_room, RecordError),
        _rejection(
            "a member removes the owner", space_id, records, 8, bob_kicks_alice, RecordForbidden
        ),
        _rejection(
            "a second commitment to a committed room key",
            space_id,
            records,
            12,
            second_commit,
            RecordForbidden,
        ),
        _rejection(
            "a commitment to a generation that does not exist yet",
            space_id,
            records,
            12,
            future_generation,
            RecordError,
        ),
        _rejection(
            "a profile box over MAX_PROFILE_BOX", space_id, records, 8, too_large, RecordTooLarge
        ),
    ]


def records_vectors() -> dict[str, Any]:
    space_id, records, summary = build_chain()
    genesis = records[0].body
    assert isinstance(genesis, Genesis)
    return {
        "about": "A verified chain. signing_bytes = RECORD_DOMAIN || msgpack([space_id, seq, "
        "prev, author, created_at, body]); sig = Ed25519(author seed, signing_bytes); "
        "record_msgpack = msgpack(record) (a map, sig included); record_hash = "
        "BLAKE2b-256(record_msgpack); space_id = base32(BLAKE2b-120(founder || genesis.box_key "
        "|| genesis.nonce)), lowercase, no padding. Secretbox nonces are fixed here only.",
        "record_domain": h(labels.RECORD_DOMAIN),
        "join_domain": h(labels.JOIN_DOMAIN),
        "space_id": space_id,
        "space_id_input": h(ALICE.key + genesis.box_key + genesis.nonce),
        "records": [
            {
                "seq": r.seq,
                "author": next(n for n, p in PEOPLE.items() if p.key == r.author),
                "record": plain(r),
                "signing_bytes": h(signing_bytes(r)),
                "sig": h(r.sig),
                "record_msgpack": h(encode_record(r)),
                "record_hash": h(record_hash(r)),
            }
            for r in records
        ],
        "joins": [
            {
                "member": name,
                "statement": h(
                    join_statement(
                        space_id, PEOPLE[name].key, PEOPLE[name].box_key, INVITE.invite_id
                    )
                ),
                "invite_signing_seed": h(INVITE.signing_seed),
                "invite_key": h(INVITE.invite_key),
            }
            for name in ("bob", "carol")
        ],
        "roster": summary,
        "rejected": rejections(space_id, records),
    }


# -- authentication ----------------------------------------------------------------------------


def auth_vectors() -> dict[str, Any]:
    space_id, _, _ = build_chain()
    nonce = fixed("challenge-nonce")
    origin = "salon.example"
    cases = [
        ("create", space_id, ALICE.signing_seed),
        ("member", space_id, BOB.signing_seed),
        ("invite", INVITE.invite_id, INVITE.signing_seed),
    ]
    out = []
    for purpose, subject, seed in cases:
        statement = wire.auth_statement(origin, purpose, subject, nonce)
        out.append(
            {
                "purpose": purpose,
                "subject": subject,
                "signing_seed": h(seed),
                "public_key": h(crypto.public_signing_key(seed)),
                "statement": h(statement),
                "signature": h(crypto.sign(seed, statement)),
            }
        )
    challenge = wire.Challenge(nonce, origin)
    return {
        "about": "statement = AUTH_DOMAIN || msgpack([origin, purpose, subject, nonce]); "
        "signature = Ed25519 over it. challenge_msgpack is the server's first frame.",
        "auth_domain": h(labels.AUTH_DOMAIN),
        "origin": origin,
        "nonce": h(nonce),
        "challenge_msgpack": h(wire.encoder.encode(challenge)),
        "statements": out,
    }


# -- invites -----------------------------------------------------------------------------------


def _seal() -> tuple[str, wire.InviteSeal, client_space.InvitePreview, tuple[bytes, bytes]]:
    space_id, _, _ = build_chain()
    preview = client_space.InvitePreview(space_id, "Vector space", "", "Alice")
    nonces = (fixed("invite-seal-nonce", 24), fixed("invite-preview-nonce", 24))
    seal = client_space.seal_invite(INVITE, space_id, 0, SPACE_KEY_0, preview, nonces)
    return space_id, seal, preview, nonces


def invite_vectors() -> dict[str, Any]:
    space_id, records, _ = build_chain()
    _, seal, preview, nonces = _seal()
    link = str(INVITE)
    assert parse_invite_link(link) == INVITE
    assert client_space.open_preview(INVITE, space_id, seal.preview) == preview
    # The join flow on the example chain: Bob opens the link when the head is seq 3 (the
    # invite record) and joins with the record at seq 4.
    nonce = fixed("challenge-nonce")
    invite_statement = wire.auth_statement(ORIGIN, "invite", INVITE.invite_id, nonce)
    invite_sig = crypto.sign(INVITE.signing_seed, invite_statement)
    member_statement = wire.auth_statement(ORIGIN, "member", space_id, nonce)
    member_sig = crypto.sign(BOB.signing_seed, member_statement)
    head = records[3]
    join = records[4]
    assert isinstance(join.body, Join) and join.author == BOB.key
    invite = head.body
    assert isinstance(invite, InviteCreate)
    frames: list[tuple[str, Any]] = [
        ("open_invite", wire.OpenInvite(1, INVITE.invite_id, invite_sig)),
        (
            "invite_opened",
            wire.InviteOpened(
                1,
                space_id,
                invite.role,
                invite.expires_at,
                seal.preview,
                head.seq,
                record_hash(head),
            ),
        ),
        ("join_space", wire.JoinSpace(2, INVITE.invite_id, invite_sig, join, member_sig)),
        ("joined", wire.Joined(2, space_id, join.seq, seal)),
    ]
    return {
        "about": "link = SERVER/join/ID#base64url(secret, no padding). signing_seed = "
        "HKDF-SHA256(secret, salt=empty, info=INVITE_SIGN_LABEL || 0x00 || utf8(id), 32); "
        "invite_key = its Ed25519 public key; seal_key and preview_key likewise with "
        "INVITE_SEAL_LABEL and INVITE_PREVIEW_LABEL. sealed = secretbox(seal_key, "
        "msgpack(SealedSpaceKey{space_id, epoch, key})); preview = secretbox(preview_key, "
        "msgpack(InvitePreview{space_id, name, description, inviter})); secretbox output is "
        "nonce(24) || XSalsa20-Poly1305. join_flow: the four frames of opening and joining, "
        "the auth statements signed under the challenge nonce.",
        "sign_label": labels.INVITE_SIGN_LABEL,
        "seal_label": labels.INVITE_SEAL_LABEL,
        "preview_label": labels.INVITE_PREVIEW_LABEL,
        "server": SERVER,
        "invite_id": INVITE.invite_id,
        "secret": h(INVITE.secret),
        "link": link,
        "signing_seed": h(INVITE.signing_seed),
        "invite_key": h(INVITE.invite_key),
        "seal_key": h(INVITE.seal_key),
        "preview_key": h(INVITE.preview_key),
        "seal": {
            "space_id": space_id,
            "epoch": 0,
            "space_key": h(SPACE_KEY_0),
            "nonce": h(nonces[0]),
            "plaintext_msgpack": h(
                _enc.encode(client_space.SealedSpaceKey(space_id, 0, SPACE_KEY_0))
            ),
            "sealed": h(seal.sealed),
            "preview": plain(preview),
            "preview_nonce": h(nonces[1]),
            "preview_plaintext_msgpack": h(_enc.encode(preview)),
            "preview_box": h(seal.preview),
            "invite_seal_msgpack": h(_enc.encode(seal)),
        },
        "join_flow": {
            "origin": ORIGIN,
            "nonce": h(nonce),
            "joiner": "bob",
            "invite_statement": h(invite_statement),
            "member_statement": h(member_statement),
            "frames": [
                {"frame": name, "message": plain(m), "msgpack": h(wire.encoder.encode(m))}
                for name, m in frames
            ],
        },
    }


# -- space key: secretboxes, rekey, envelopes --------------------------------------------------


def space_key_vectors() -> dict[str, Any]:
    space_id, records, _ = build_chain()
    boxes = []
    for record in records:
        body = record.body
        if isinstance(body, SpaceMeta | Profile):
            kind: type[msgspec.Struct] = (
                client_space.SpaceInfo if isinstance(body, SpaceMeta) else client_space.ProfileInfo
            )
            box = body.box
        elif isinstance(body, RoomCreate):
            kind, box = RoomName, body.name_box
        else:
            continue
        key = SPACE_KEY_0 if body.epoch == 0 else SPACE_KEY_1
        opened = crypto.secretbox_open(key, box)
        boxes.append(
            {
                "seq": record.seq,
                "what": type(body).__name__,
                "epoch": body.epoch,
                "key": h(key),
                "box": h(box),
                "plaintext_msgpack": h(opened),
                "plaintext": plain(msgspec.msgpack.decode(opened, type=kind)),
            }
        )
    rekey = next(r.body for r in records if isinstance(r.body, Rekey))
    assert isinstance(rekey, Rekey)
    nonce = fixed("space-envelope/bob", 24)
    envelope = wire.Envelope(
        client_space.SPACE_SCOPE,
        1,
        BOB.key,
        ALICE.key,
        crypto.seal_key(
            ALICE.box_secret,
            BOB.box_key,
            space_id,
            client_space.SPACE_SCOPE,
            1,
            0,
            SPACE_KEY_1,
            nonce,
        ),
    )
    # A repair: were epoch 1's key bad (nobody could open it), a moderator's next rekey
    # names the last good epoch (0) as its prev_epoch, stepping over epoch 1.
    roster = Roster.from_records(space_id, records)
    repair_body = Rekey(2, 0, crypto.secretbox(SPACE_KEY_2, SPACE_KEY_0, fixed("repair", 24)))
    (repair,) = _chain(ALICE, space_id, roster, [repair_body])
    roster.apply(repair)
    return {
        "about": "box = nonce(24) || XSalsa20-Poly1305(space_key[epoch], msgpack(value)). "
        "Rekey.prev_box = secretbox(new key, key of prev_epoch). A space envelope is "
        "crypto_box (X25519 sender secret, recipient box key) of msgpack(SealedKey "
        "[SEALED_KEY_DOMAIN, space_id, 'space', epoch, 0, new key]), sent by the rekey's "
        "author. repair: a rekey appended to the whole example chain that steps "
        "over epoch 1 (prev_epoch 0), accepted by the roster rules.",
        "space_id": space_id,
        "space_keys": {"0": h(SPACE_KEY_0), "1": h(SPACE_KEY_1), "2": h(SPACE_KEY_2)},
        "boxes": boxes,
        "rekey": {
            "seq": next(r.seq for r in records if r.body is rekey),
            "epoch": rekey.epoch,
            "prev_epoch": rekey.prev_epoch,
            "prev_box": h(rekey.prev_box),
        },
        "repair": {
            "prefix": len(records),
            "epoch": repair_body.epoch,
            "prev_epoch": repair_body.prev_epoch,
            "prev_box": h(repair_body.prev_box),
            "record_msgpack": h(encode_record(repair)),
        },
        "envelope": {
            "sender": "alice",
            "recipient": "bob",
            "nonce": h(nonce),
            "sealed_key_msgpack": h(
                roomkeys.sealed_key(space_id, client_space.SPACE_SCOPE, 1, 0, SPACE_KEY_1)
            ),
            "envelope": plain(envelope),
            "envelope_msgpack": h(_enc.encode(envelope)),
        },
    }


def room_key_vectors() -> dict[str, Any]:
    """Sealed keys (room and space scope), room-key commitments, the generation ratchet and
    the ciphertext framing, from protocol.roomkeys and client.core.crypto."""
    space_id, records, _ = build_chain()
    roster = Roster.from_records(space_id, records[:12])  # epoch 0, generations 0..2 committed
    keys = [room_key_at(space_id, g) for g in range(ROOM_GENERATIONS + 1)]
    ratchet = [
        {
            "generation": g,
            "info": h(
                labels.ROOM_KEY_RATCHET_LABEL.encode()
                + b"\x00"
                + _enc.encode((space_id, ROOM_ID, 0, g))
            ),
            "key": h(roomkeys.ratchet(keys[g - 1], space_id, ROOM_ID, 0, g)),
        }
        for g in range(1, ROOM_GENERATIONS + 1)
    ]
    assert [r["key"] for r in ratchet] == [h(k) for k in keys[1:]]
    commitments = [
        {
            "generation": g,
            "key": h(keys[g]),
            "input": h(
                labels.ROOM_KEY_COMMIT_DOMAIN + _enc.encode((space_id, ROOM_ID, 0, g, keys[g]))
            ),
            "commit": h(roomkeys.key_commitment(space_id, ROOM_ID, 0, g, keys[g])),
        }
        # Generation 2 first, so the chain has a point where Alice made the key but has not
        # committed generation 1 yet (the "older than its join" refusal needs that).
        for g in (2, *range(ROOM_GENERATIONS - 1))
    ]
    envelopes = []
    for person in (BOB, CAROL):
        # A joiner is sealed the generation its join started (client.core.rooms._seal_room_key).
        generation = roster.member_generation(ROOM_ID, person.key)
        nonce = fixed(f"room-envelope/{person.name}", 24)
        box = crypto.seal_key(
            ALICE.box_secret,
            person.box_key,
            space_id,
            ROOM_ID,
            0,
            generation,
            keys[generation],
            nonce,
        )
        envelope = wire.Envelope(ROOM_ID, 0, person.key, ALICE.key, box)
        envelopes.append(
            {
                "recipient": person.name,
                "generation": generation,
                "key": h(keys[generation]),
                "sealed_key_msgpack": h(
                    roomkeys.sealed_key(space_id, ROOM_ID, 0, generation, keys[generation])
                ),
                "nonce": h(nonce),
                "envelope": plain(envelope),
                "envelope_msgpack": h(_enc.encode(envelope)),
            }
        )
    relabelled = wire.Envelope(
        ROOM_ID, 1, BOB.key, ALICE.key, bytes.fromhex(envelopes[0]["envelope"]["box"])
    )
    box = fixed("some ciphertext", 24)
    return {
        "about": "Envelope.box = crypto_box(sender box secret, recipient box key, "
        "msgpack(SealedKey [SEALED_KEY_DOMAIN, space_id, scope, epoch, generation, key])), "
        "output nonce(24) || tag || ciphertext; on open the recipient requires domain, "
        "space_id, scope and epoch to equal what it asked for (the envelope's clear fields) "
        "and a 32-byte key. commit = SHA-256(ROOM_KEY_COMMIT_DOMAIN || msgpack([space_id, "
        "room_id, epoch, generation, key])), carried by a RoomKey record. key[g] = "
        "HKDF-SHA256(key[g-1], salt empty, info = ROOM_KEY_RATCHET_LABEL || 0x00 || "
        "msgpack([space_id, room_id, epoch, g]), 32). framed = uint32 BE generation || box.",
        "space_id": space_id,
        "room_id": ROOM_ID,
        "epoch": 0,
        "sealed_key_domain": labels.SEALED_KEY_DOMAIN,
        "commit_domain": h(labels.ROOM_KEY_COMMIT_DOMAIN),
        "ratchet_label": labels.ROOM_KEY_RATCHET_LABEL,
        "sender": "alice",
        "room_key": h(ROOM_KEY),
        "ratchet": ratchet,
        "commitments": commitments,
        "envelopes": envelopes,
        "relabelled": {
            "why": "Bob's epoch-0 envelope with its clear epoch rewritten to 1: it opens, "
            "but the sealed epoch (0) is not the one asked for (1), so it is refused",
            "envelope_msgpack": h(_enc.encode(relabelled)),
        },
        "framing": {
            "generation": 2,
            "box": h(box),
            "framed": h(roomkeys.frame(2, box)),
        },
    }


# -- chat messages and stories -----------------------------------------------------------------


def message_vectors() -> dict[str, Any]:
    """A message and a story sealed in the example room at epoch 0, generation 2 (after
    Carol's join), signed at head #11 (the last RoomKey record) with its hash."""
    space_id, records, _ = build_chain()
    head_record = records[11]
    head, head_hash = head_record.seq, record_hash(head_record)
    roster = Roster.from_records(space_id, records[: head + 1])
    generation = roster.room_generation(ROOM_ID)
    room_key = room_key_at(space_id, generation)
    client_id = fixed("client-id", 16)
    header = chatcrypto.MessageHeader(space_id, ROOM_ID, 0, BOB.key, client_id, 0)
    text, created_at = "hello, salon ✓", CLOCK
    nonce = fixed("message-nonce", 24)
    box = chatcrypto.seal_message(
        room_key, BOB.signing_seed, header, text, created_at, head, head_hash, nonce
    )
    content = chatcrypto.open_message(room_key, header, box)
    statement = chatcrypto.message_statement(header, text, created_at, head, head_hash)
    framed = roomkeys.frame(generation, box)
    send = SendMessage(7, ROOM_ID, client_id, 0, 0, framed)
    story_header = chatcrypto.StoryHeader(
        space_id, ROOM_ID, 0, ALICE.key, "storyAAAAAAAAAAA", 86400
    )
    image, thumb = b"\xff\xd8 not really a jpeg \xff\xd9", b"\xff\xd8 thumb \xff\xd9"
    story_nonces = (fixed("story/meta", 24), fixed("story/image", 24), fixed("story/thumb", 24))
    story = chatcrypto.seal_story(
        room_key,
        ALICE.signing_seed,
        story_header,
        "a caption",
        image,
        thumb,
        (640, 480),
        CLOCK,
        head,
        head_hash,
        story_nonces,
    )
    meta = chatcrypto.open_story_meta(room_key, story_header, story.meta)
    post = PostStory(
        8,
        ROOM_ID,
        story_header.story_id,
        0,
        86400,
        roomkeys.frame(generation, story.meta),
        story.thumb,
        len(story.image),
    )
    return {
        "about": "room_key = the room's key of (epoch, generation) (room_keys.json); "
        "message_key = HKDF(room_key, MESSAGE_LABEL, utf8(room_id)); ad = MESSAGE_AD "
        "|| msgpack(header array); statement = MESSAGE_SIG || msgpack(header fields + "
        "[created_at, head, head_hash, text]); plaintext = pad(msgpack([text, created_at, "
        "head, head_hash, sig])) (4-byte BE length, zeros to a multiple of 256); box = "
        "nonce(24) || XChaCha20-Poly1305-IETF(message_key, nonce, plaintext, ad); what is "
        "sent (SendMessage.box) is uint32 BE generation || box. Stories likewise under "
        "story_key, ad = STORY_AD || msgpack(header + [part]); only the meta box is framed "
        "with the generation (PostStory.meta); image and thumb boxes are not.",
        "space_id": space_id,
        "room_id": ROOM_ID,
        "epoch": 0,
        "generation": generation,
        "room_key": h(room_key),
        "head": head,
        "head_hash": h(head_hash),
        "message": {
            "header": plain(list(header)),
            "text": text,
            "created_at": created_at,
            "message_key": h(chatcrypto.message_key(room_key, ROOM_ID)),
            "ad": h(chatcrypto.message_ad(header)),
            "statement": h(statement),
            "sig": h(content.sig),
            "padded_plaintext": h(
                chatcrypto.pad(
                    _enc.encode(
                        chatcrypto.MessageContent(text, created_at, head, head_hash, content.sig)
                    )
                )
            ),
            "nonce": h(nonce),
            "box": h(box),
            "framed": h(framed),
            "send_message_msgpack": h(wire.encoder.encode(send)),
        },
        "story": {
            "header": plain(list(story_header)),
            "story_key": h(chatcrypto.story_key(room_key, ROOM_ID)),
            "caption": meta.caption,
            "size": [meta.width, meta.height],
            "created_at": meta.created_at,
            "image": h(image),
            "thumb": h(thumb),
            "statement": h(chatcrypto.story_statement(story_header, meta)),
            "sig": h(meta.sig),
            "nonces": {
                "meta": h(story_nonces[0]),
                "image": h(story_nonces[1]),
                "thumb": h(story_nonces[2]),
            },
            "ad": {p: h(chatcrypto.story_ad(story_header, p)) for p in ("meta", "image", "thumb")},
            "meta_plaintext_msgpack": h(_enc.encode(meta)),
            "meta_box": h(story.meta),
            "meta_framed": h(roomkeys.frame(generation, story.meta)),
            "image_box": h(story.image),
            "thumb_box": h(story.thumb),
            "post_story_msgpack": h(wire.encoder.encode(post)),
        },
    }


# -- calls -------------------------------------------------------------------------------------


def _signed_action(person: Person, unsigned: CallAction) -> CallAction:
    return msgspec.structs.replace(
        unsigned, sig=crypto.sign(person.signing_seed, action_signing_bytes(unsigned))
    )


def _action_case(action: CallAction) -> dict[str, Any]:
    return {
        "action": plain(action),
        "signing_bytes": h(action_signing_bytes(action)),
        "sig": h(action.sig),
        "action_msgpack": h(_enc.encode(action)),
    }


def call_vectors() -> dict[str, Any]:
    space_id, records, _ = build_chain()
    call_id = "callAAAAAAAAAAAA"
    head = records[-1]
    head_seq, head_hash = head.seq, record_hash(head)

    def action(person: Person, name: Any, target: bytes, nonce: str, ref: bytes = b"") -> Any:
        unsigned = CallAction(
            space_id,
            ROOM_ID,
            call_id,
            person.key,
            name,
            target,
            CLOCK * 1000,
            fixed(nonce, 16),
            head_seq,
            head_hash,
            ref,
        )
        return _signed_action(person, unsigned)

    mute = action(ALICE, "mute", BOB.key, "action")
    join = action(BOB, "join", BOB.key, "action/bob-join")
    kick = action(ALICE, "kick", BOB.key, "action/kick", join.nonce)
    base = callkeys.SenderKey(0, fixed("media-key/bob"))
    ratcheted = base.ratchet()
    media = callkeys.MediaKeyMessage(ratcheted.epoch, ratcheted.key, 12)
    join_nonces = (fixed("join-nonce/alice", 16), fixed("join-nonce/bob", 16))
    # Every signal names the pair's current joins; the smaller member key offers.
    alice_join, bob_join = join_nonces
    pair = (bob_join, alice_join) if BOB.key < ALICE.key else (alice_join, bob_join)
    body = callsignal.SignalBody(
        space_id,
        ROOM_ID,
        call_id,
        BOB.key,
        ALICE.key,
        "media-key",
        callsignal.link_id(*pair),
        0,
        _enc.encode(media),
    )
    nonce = fixed("signal-nonce", 24)
    box = callsignal.seal_signal(BOB.signing_seed, BOB.box_secret, ALICE.box_key, body, nonce)
    alice_key = callkeys.SenderKey(3, fixed("media-key/alice"))
    pairs = [(ALICE.key, alice_key.commitment()), (BOB.key, ratcheted.commitment())]
    return {
        "about": "action sig = Ed25519(actor, CALL_ACTION_DOMAIN || msgpack([space_id, "
        "room_id, call_id, actor, action, target, issued_at, nonce, head_seq, head_hash, "
        "join_ref])); head = the actor's verified roster head (here the example chain's "
        "last record); join_ref = the nonce of the target's join for admit, deny, kick, "
        "promote, demote, else empty. A signal box = "
        "crypto_box(sender box secret, recipient box key, msgpack({body: msgpack(SignalBody "
        "map), sig: Ed25519(CALL_SIGNAL_DOMAIN || body)})).",
        "head_seq": head_seq,
        "head_hash": h(head_hash),
        "action": _action_case(mute),
        "join": _action_case(join),
        "seat_action": _action_case(kick),
        "signal": {
            "sender": "bob",
            "recipient": "alice",
            "sender_join_nonce": h(bob_join),
            "recipient_join_nonce": h(alice_join),
            "body": plain(body),
            "body_msgpack": h(_enc.encode(body)),
            "nonce": h(nonce),
            "box": h(box),
        },
        "link_id": {
            "offerer_join_nonce": h(join_nonces[0]),
            "answerer_join_nonce": h(join_nonces[1]),
            "link": h(callsignal.link_id(*join_nonces)),
        },
        "media_keys": {
            "ratchet_label": labels.CALL_MEDIA_RATCHET_LABEL,
            "base": {"epoch": 0, "key": h(base.key), "commitment": h(base.commitment())},
            "ratcheted": {
                "epoch": ratcheted.epoch,
                "key": h(ratcheted.key),
                "commitment": h(ratcheted.commitment()),
            },
            "media_key_message_msgpack": h(_enc.encode(media)),
        },
        "verification_code": {
            "pairs": [[h(m), h(c)] for m, c in pairs],
            "alice_key": {"epoch": alice_key.epoch, "key": h(alice_key.key)},
            "code": callkeys.verification_code(pairs),
        },
    }


# -- SFrame ------------------------------------------------------------------------------------


FRAMES: dict[str, tuple[str, bytes]] = {
    # a VP8 keyframe (tag bit 0 = 0): 10 clear bytes
    "vp8-keyframe": ("vp8", bytes.fromhex("5015009d012a8002e001") + b"keyframe payload"),
    # a VP8 delta frame (tag bit 0 = 1): 3 clear bytes
    "vp8-delta": ("vp8", bytes.fromhex("b10800") + b"delta frame payload"),
    # an Opus packet: 1 clear byte (TOC)
    "opus": ("opus", bytes.fromhex("78") + b"opus payload"),
}


def sframe_vectors() -> dict[str, Any]:
    suite = MEDIA_SUITE
    key = callkeys.SenderKey(5, fixed("media-key/carol"))
    kids = [
        {"index": i, "epoch": e, "kid": media_keys.media_kid(i, e)}
        for i, e in ((0, 0), (1, 0), (3, 5), (2, 65534), (300, 65535))
    ]
    for case in kids:
        assert media_keys.kid_index(case["kid"]) == case["index"]
        assert media_keys.kid_epoch(case["kid"]) == case["epoch"]
    refused = []
    for index, epoch in ((2, 65536), (300, 1 << 20), (2, -1)):
        try:
            media_keys.media_kid(index, epoch)
        except media_keys.KeyIdExhausted as exc:
            refused.append({"index": index, "epoch": epoch, "error": type(exc).__name__})
        else:  # pragma: no cover - the vector would be wrong
            raise AssertionError(f"epoch {epoch} got a key id")
    kid = callkeys.media_kid(2, key.epoch)
    sframe_key, salt = sframe.derive_key_salt(suite, kid, key.key)
    frames: list[dict[str, Any]] = []
    for name, (codec, frame) in FRAMES.items():
        ctr = 1000 + len(frames)
        ctx = sframe.SFrameContext(suite)
        ctx.add_key(kid, key.key, usage=sframe.KeyUsage.ENCRYPT, next_ctr=ctr)
        frames.append(
            {
                "name": name,
                "codec": codec,
                "ctr": ctr,
                "frame": h(frame),
                "sframe_header": h(sframe.encode_header(kid, ctr)),
                "nonce": h(sframe.make_nonce(salt, ctr)),
                "protected": h(sframe.protect_frame(ctx, kid, codec, frame)),
            }
        )
    return {
        "about": "Suite 4 (AES_128_GCM_SHA256_128, RFC 9605). kid = index << 16 | epoch, "
        "0 <= epoch <= 65535 (MAX_EPOCH): an epoch outside that has no key id (refused, "
        "never wrapped). secret = HKDF-Extract(salt='', base_key); key = HKDF-Expand(secret, "
        "SFRAME_KEY_LABEL || kid(8 BE) || suite(2 BE), 16); salt = same with SFRAME_SALT_LABEL, "
        "12. protected = clear codec bytes || SFrame header || AES-GCM(key, salt XOR ctr, "
        "frame rest, aad = header || clear bytes).",
        "cipher_suite": int(suite),
        "epoch_bits": media_keys.EPOCH_BITS,
        "max_epoch": media_keys.MAX_EPOCH,
        "kids": kids,
        "refused": refused,
        "key": {
            "base_key": h(key.key),
            "epoch": key.epoch,
            "index": 2,
            "kid": kid,
            "sframe_key": h(sframe_key),
            "sframe_salt": h(salt),
        },
        "frames": frames,
    }


# -- the SFU reads key ids -------------------------------------------------------------------


PUBLISHER, SUBSCRIBER, OTHER = 2, 1, 3  # sender indexes (seats)
VP8_PT, OPUS_PT = 96, 111
# RFC 7741 payload descriptors: X=1 S=1 PID=0 with a 15-bit picture id (as aiortc's
# packetizer writes them), a continuation packet (S=0), and the bare one-byte form.
VP8_START_LONG = bytes.fromhex("90808123")
VP8_MIDDLE_LONG = bytes.fromhex("80808123")
VP8_START_SHORT = bytes.fromhex("10")


def _protect(index: int, epoch: int, codec: str, frame: bytes, ctr: int) -> tuple[int, bytes]:
    key = fixed(f"media-key/{index}")
    kid = media_keys.media_kid(index, epoch)
    ctx = sframe.SFrameContext(MEDIA_SUITE)
    ctx.add_key(kid, key, usage=sframe.KeyUsage.ENCRYPT, next_ctr=ctr)
    return kid, sframe.protect_frame(ctx, kid, codec, frame)


def sfu_rtp_vectors() -> dict[str, Any]:
    """RTP packets as the publisher (index 2) sends them, what the SFU reads of each
    (``sfu.rtp.sframe_kid``), what the real forwarder does with them (with a subscriber)
    and, for what it forwards, the CSRC and key id the receiver checks."""
    _, keyframe = _protect(PUBLISHER, 5, "vp8", FRAMES["vp8-keyframe"][1], 7)
    _, delta = _protect(PUBLISHER, 5, "vp8", FRAMES["vp8-delta"][1], 8)
    _, opus = _protect(PUBLISHER, 5, "opus", FRAMES["opus"][1], 9)
    _, forged = _protect(OTHER, 0, "vp8", FRAMES["vp8-keyframe"][1], 1 << 40)
    _, big_ctr = _protect(PUBLISHER, 5, "vp8", FRAMES["vp8-delta"][1], 1 << 40)
    video, audio = 0x1000, 0x2000
    cases: list[tuple[str, bool, bytes]] = [
        ("vp8 keyframe, first packet", True, VP8_START_LONG + keyframe[:20]),
        ("vp8 keyframe, next packet (no SFrame header)", True, VP8_MIDDLE_LONG + keyframe[20:]),
        ("vp8 delta frame, one packet", True, VP8_START_SHORT + delta),
        ("vp8 delta frame with a 5-byte counter", True, VP8_START_SHORT + big_ctr),
        ("opus packet", False, opus),
        ("vp8 keyframe under another sender's key id", True, VP8_START_LONG + forged[:20]),
        ("its next packet follows the dropped start", True, VP8_MIDDLE_LONG + forged[20:]),
        ("vp8 frame start cut before the SFrame header", True, VP8_START_SHORT + keyframe[:10]),
    ]
    fwd = Forwarder(ForwarderConfig(stale_after=None), clock=lambda: float(CLOCK))
    out: list[bytes] = []
    fwd.add_participant(
        "publisher",
        [
            UpTrackSpec("video", video, frozenset({VP8_PT})),
            UpTrackSpec("audio", audio, frozenset({OPUS_PT})),
        ],
        sender_index=PUBLISHER,
    )
    fwd.add_participant(
        "subscriber",
        downtracks=[
            DownTrackSpec("video", 0x9000, VP8_PT, 90000),
            DownTrackSpec("audio", 0xA000, OPUS_PT, 48000),
        ],
        sender_index=SUBSCRIBER,
    )

    def sink(packet: bytes) -> bool:
        out.append(packet)
        return True

    fwd.set_sink("subscriber", sink)
    packets = []
    seq = {video: 100, audio: 500}
    for name, is_video, payload in cases:
        ssrc = video if is_video else audio
        seq[ssrc] += 1
        data = rtp.build_rtp(
            True, VP8_PT if is_video else OPUS_PT, seq[ssrc], seq[ssrc] * 3000, ssrc, payload
        )
        header = rtp.parse_rtp(data)
        assert header is not None
        kid = rtp.sframe_kid(data, header, is_video)
        before = len(out)
        fwd.on_rtp("publisher", data)
        forwarded = out[before:]
        case: dict[str, Any] = {
            "case": name,
            "kind": "video" if is_video else "audio",
            "packet": h(data),
            "payload_start": header.payload_start,
            "sframe_kid": kid,
            "kid_index": media_keys.kid_index(kid) if kid >= 0 else None,
            "forwarded": [h(p) for p in forwarded],
        }
        if forwarded:
            parsed = RtpPacket.parse(forwarded[0])
            case["forwarded_csrc"] = rtp_source(parsed)
        packets.append(case)
    receiver = []
    for name, codec, frame in (
        ("vp8 keyframe", "vp8", keyframe),
        ("vp8 delta frame", "vp8", delta),
        ("opus frame", "opus", opus),
        ("forged vp8 keyframe", "vp8", forged),
    ):
        peeked = _peek_kid(codec, frame)
        assert peeked is not None
        kid = peeked
        receiver.append(
            {
                "frame": name,
                "codec": codec,
                "protected": h(frame),
                "kid": kid,
                "kid_index": media_keys.kid_index(kid),
                "slot_source": PUBLISHER,
                "accepted": media_keys.kid_index(kid) == PUBLISHER,
            }
        )
    return {
        "about": "The SFU reads the SFrame key id of each frame's first RTP packet without a "
        "key: after the RTP header (RFC 3550, CSRCs and extension skipped) and, for VP8, the "
        "RFC 7741 payload descriptor, it skips the clear codec bytes (VP8 keyframe 10, delta "
        "3, by bit 0 of the frame's first byte; Opus 1, the TOC) and parses the SFrame header "
        "(RFC 9605 4.3). sframe_kid -1: not a frame start (the packet follows its frame's "
        "verdict); -2: a frame start without a parseable header (dropped). The forwarder, "
        "given the publisher's sender index, forwards a frame only if kid >> 16 == index and "
        "writes the index as the one CSRC of every packet it forwards (here the forwarded "
        "packets are the subscriber's re-headed copies). A receiver takes the CSRC as the "
        "slot's publisher and accepts a reassembled frame only if its key id names it.",
        "publisher_index": PUBLISHER,
        "subscriber_index": SUBSCRIBER,
        "payload_types": {"vp8": VP8_PT, "opus": OPUS_PT},
        "not_frame_start": rtp.NOT_FRAME_START,
        "malformed": rtp.SFRAME_MALFORMED,
        "packets": packets,
        "receiver": receiver,
        "dropped_kid": _dropped_kid(fwd),
    }


def _dropped_kid(fwd: Forwarder) -> int:
    participants = fwd.stats()["participants"]
    assert isinstance(participants, dict)
    return int(participants["publisher"]["dropped_kid"])


# -- ids ---------------------------------------------------------------------------------------


ID_EXAMPLES = [
    "roomAAAAAAAAAAAA",
    "_leading_underscore",
    "a-b_c-d_",
    "12345678",
    "x" * 64,
    "-roomAAAAAAAAAAA",
    "short7c",
    "x" * 65,
    "has space here",
    "dots.are.not.ok",
    "plus+slash/",
    "",
    "ümlautsAAAAAAA",
]


def id_vectors() -> dict[str, Any]:
    return {
        "about": "Room, story, invite and call ids: 8 to 64 characters of the URL-safe "
        "base64 alphabet, never beginning with '-' (it would read as a command-line option). "
        "Generated as base64url(12 random bytes) (16 characters), drawn again when the "
        "first character is '-'. Space ids are derived (records.json), not ids of this kind.",
        "pattern": ID_PATTERN.pattern,
        "examples": [{"id": text, "valid": is_valid_id(text)} for text in ID_EXAMPLES],
    }


# -- wire encoding -----------------------------------------------------------------------------


def _ice_servers_example() -> ice_wire.IceServers:
    """IceServers as spaces/handlers/ice.py makes it: turn_secret "vector-turn-secret-0123",
    TTL 3600 s from 2026-01-01T00:00:00Z, the random part fixed, relay calls on."""
    ice = IceSection(
        stun_urls=["stun:turn.salon.example:3478"],
        turn_urls=["turn:turn.salon.example:3478?transport=udp"],
        turn_secret="vector-turn-secret-0123",
        turn_ttl_seconds=3600,
        relay_only=True,
    )
    return spaces_ice.ice_servers(
        ice, 7, now=1_767_225_600, token=lambda n: "AAECAwQFBgcICQoLDA0ODw"
    )


def wire_vectors() -> dict[str, Any]:
    """How tagged structs look on the wire: a map whose first key is "type" (msgspec's default
    tag field), then every field in declaration order, defaults included."""
    space_id, records, _ = build_chain()
    nonce = fixed("challenge-nonce")
    client: list[Any] = [
        wire.Authenticate(1, space_id, BOB.key, bytes(64)),
        wire.GetRecords(2),
        wire.Append(3, [records[-1]]),
        wire.GetEnvelopes(4, client_space.SPACE_SCOPE, 1),
        ice_wire.GetIceServers(7),
        SfuView(8, ROOM_ID, "callid-0001", [SlotView("3", 360), SlotView("4", 0)]),
    ]
    server: list[Any] = [
        wire.Challenge(nonce, "salon.example"),
        wire.Welcome(1, space_id, records[-1].seq),
        wire.Error(None, "invalid_message", "bad frame"),
        wire.Error(None, "rate_limited", "too many connections from your address"),
        wire.Error(2, "forbidden", "only owners and moderators invite"),
        wire.SessionClosed("removed"),
        _ice_servers_example(),
    ]
    head = records[-1]
    # A client whose cached head is #8 pages to the server's head (#16) in two pages (here
    # the server's page limit is taken to be 3 records).
    paging: list[Any] = [
        wire.GetRecords(5, 8),
        wire.Records(5, records[9:12], head.seq, record_hash(head)),
        wire.GetRecords(6, 11),
        wire.Records(6, records[12:], head.seq, record_hash(head)),
    ]
    return {
        "about": "MessagePack frames. Each message is a map: 'type' first, then the fields in "
        "the order PROTOCOL.md lists them; fields with defaults are still sent. paging: "
        "GetRecords from a cached head (#8) and the two Records pages up to the server's "
        "head; the first record of each page links (prev) to the hash of the record asked "
        "after, and the last page ends at head_seq with head_hash.",
        "client": [{"message": plain(m), "msgpack": h(wire.encoder.encode(m))} for m in client],
        "server": [{"message": plain(m), "msgpack": h(wire.encoder.encode(m))} for m in server],
        "paging": {
            "cached_head_seq": 8,
            "cached_head_hash": h(record_hash(records[8])),
            "frames": [
                {"frame": m.__struct_config__.tag, "msgpack": h(wire.encoder.encode(m))}
                for m in paging
            ],
        },
    }


HASHES_CHAIN = 1300  # records in the retention example (> HASH_WINDOW + HASH_CHECKPOINT)


def hashes_vectors() -> dict[str, Any]:
    """Which record hashes a roster keeps (Roster.hashes) after HASHES_CHAIN records: Alice
    founds a space and renames it HASHES_CHAIN - 1 times (the real Roster applies them)."""
    genesis = Genesis(ALICE.box_key, fixed("hashes/genesis-nonce", 16))
    space_id = derive_space_id(ALICE.key, genesis)
    meta = SpaceMeta(0, _box(SPACE_KEY_0, client_space.SpaceInfo("Long space"), "hashes/meta"))
    records = _chain(ALICE, space_id, None, [genesis] + [meta] * (HASHES_CHAIN - 1))
    roster = Roster.from_records(space_id, records)
    kept = sorted(roster.hashes)
    window = [s for s in kept if s > roster.head_seq - HASH_WINDOW]
    checkpoints = [s for s in kept if s not in window]
    assert all(roster.hashes[s] == record_hash(records[s]) for s in kept)
    return {
        "about": "After applying record seq s a roster keeps hash[s] and forgets hash[s - "
        "HASH_WINDOW] unless (s - HASH_WINDOW) % HASH_CHECKPOINT == 0. So with head H it "
        "holds every hash of seq > H - HASH_WINDOW and, below that, those of seqs divisible "
        "by HASH_CHECKPOINT. An older hash is proven by fetching the records from it up to "
        "the next kept seq and checking their prev links and the kept hash.",
        "hash_window": HASH_WINDOW,
        "hash_checkpoint": HASH_CHECKPOINT,
        "records": len(records),
        "head_seq": roster.head_seq,
        "kept_count": len(kept),
        "kept_checkpoints": checkpoints,
        "kept_window": [window[0], window[-1]],
        "checkpoint_hashes": {str(s): h(roster.hashes[s]) for s in checkpoints},
        "first_window_hash": h(roster.hashes[window[0]]),
        "head_hash": h(roster.head_hash),
    }


BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "wire": wire_vectors,
    "identities": identities,
    "records": records_vectors,
    "auth": auth_vectors,
    "invites": invite_vectors,
    "space_keys": space_key_vectors,
    "room_keys": room_key_vectors,
    "messages": message_vectors,
    "calls": call_vectors,
    "sframe": sframe_vectors,
    "sfu_rtp": sfu_rtp_vectors,
    "ids": id_vectors,
    "hashes": hashes_vectors,
}


def build_all() -> dict[str, dict[str, Any]]:
    return {name: build() for name, build in BUILDERS.items()}


def dump(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    for name, vectors in build_all().items():
        (VECTOR_DIR / f"{name}.json").write_text(dump(vectors), encoding="utf-8")
        print(f"wrote protocol/vectors/{name}.json")


if __name__ == "__main__":
    main()
