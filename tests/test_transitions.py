"""Layer 3: the round table and the transition tables derived from it. Every (state, frame) pair
either moves on as the table says, is ignored and counted (a duplicate, a frame after the end), or
ends in a named refusal (client) or an exclusion (server) (h2's test_state_machines.py)."""

import copy
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from secagg.codec import decode, encode
from secagg.errors import Equivocation, LocalProtocolError, RemoteProtocolError, UnexpectedMessage
from secagg.messages import MESSAGE_TYPES, Abort, AdvertiseKeys
from secagg.protocol.client import Client
from secagg.protocol.rounds import (
    CLIENT_TRANSITIONS,
    CLIENT_TRANSITIONS_AUTHENTICATED,
    PEER_ENDED,
    ROUNDS,
    SERVER_TRANSITIONS,
    ClientState,
    PeerState,
    Phase,
    Stage,
    round_table,
    state_diagram,
)
from secagg.protocol.server import Server

from harness import Harness, make_config

CLIENT = 3
SPEC = Path(__file__).resolve().parent.parent / "protocol_spec" / "SPEC.md"


def _snapshots():
    """A real round, with copies of client 3 and of the server taken whenever the server posts a
    frame, and one genuine frame of every message type."""
    config = make_config(8, 5, bits=16, dropout_rate=0.1, label="transitions", authenticated=True)
    clients, servers, frames = {}, {}, {}

    def observe(sender, recipient, frame):
        msg = decode(frame)
        if CLIENT in (sender, recipient):
            frames.setdefault(type(msg), frame)
        if sender == 0:
            servers.setdefault(h.server.phase, copy.deepcopy(h.server))
        if recipient == CLIENT:
            clients.setdefault(h.clients[CLIENT].state, copy.deepcopy(h.clients[CLIENT]))
        return [frame]

    h = Harness(config, label="transitions", tamper=observe)
    h.run()
    frames[Abort] = encode(Abort(session_id=config.session_id, round=config.round, sender=0,
                                 recipient=CLIENT, reason="test"))
    return config, clients, servers, frames


CONFIG, CLIENTS, SERVERS, FRAMES = _snapshots()


def test_the_tables_derive_from_the_round_table():
    assert [p.value for p in Phase][: len(ROUNDS)] == [r.name for r in ROUNDS]
    assert [s.value for s in Stage] == [r.stage for r in ROUNDS]
    assert {m for _, m in CLIENT_TRANSITIONS_AUTHENTICATED} == {r.request for r in ROUNDS} | {Abort}
    assert {m for _, m in CLIENT_TRANSITIONS} == {r.request for r in round_table(False)} | {Abort}
    assert {m for _, m in SERVER_TRANSITIONS} == {r.response for r in ROUNDS}
    for r in ROUNDS:  # every row has its handlers, by convention
        assert callable(getattr(Client, "_on_" + r.key))
        assert callable(getattr(Server, "_accept_" + r.key))
        assert callable(getattr(Server, "_close_" + r.key))


def test_the_spec_state_diagram_is_the_one_the_table_draws():
    text = SPEC.read_text()
    found = re.search(r"<!-- state-diagram -->\n```\n(.*?)```\n<!-- /state-diagram -->", text, re.S)
    assert found, "SPEC.md section 8 lost its state-diagram markers"
    assert found.group(1).rstrip("\n") == state_diagram()


def test_every_message_type_and_state_was_reached():
    assert set(FRAMES) == set(MESSAGE_TYPES.values())
    assert set(CLIENTS) >= {s for s, _ in CLIENT_TRANSITIONS_AUTHENTICATED} - {ClientState.ABORTED, ClientState.DONE}
    assert set(SERVERS) >= set(Phase) - {Phase.COMPLETED, Phase.ABORTED}


@pytest.mark.parametrize("state", list(ClientState), ids=lambda s: s.value)
@pytest.mark.parametrize("msg_type", list(MESSAGE_TYPES.values()), ids=lambda t: t.__name__)
def test_client_every_state_message_pair(state, msg_type):
    if state in CLIENTS:
        client = copy.deepcopy(CLIENTS[state])
    else:  # Done / Aborted / Error: set them on a copy of the last snapshot
        client = copy.deepcopy(CLIENTS[ClientState.AWAIT_UNMASK_REQUEST])
        client.state = state
    frame = FRAMES[msg_type]
    expected = CLIENT_TRANSITIONS_AUTHENTICATED.get((state, msg_type))
    ignored = client.ignored.total
    try:
        out = client.receive(frame)
    except LocalProtocolError:
        pytest.fail("a genuine frame must not look like local misuse")
    except RemoteProtocolError as exc:
        assert client.state is ClientState.ERROR and client.error is exc
        assert exc.client == CLIENT and exc.phase
        assert exc.round == (None if state is ClientState.AWAIT_ADVERTISE_KEYS_REQUEST else CONFIG.round)
        assert expected is None  # a genuine frame in the table is always accepted
        return
    if client.ignored.total > ignored:  # after the end, or the very frame already answered
        assert out == [] and (state in (ClientState.ABORTED, ClientState.ERROR) or expected is None)
        return
    assert expected is not None, f"{msg_type.__name__} accepted in {state.value}"
    assert client.state is expected
    assert all(o.recipient == 0 for o in out)


def test_client_error_message_says_who_what_where():
    client = copy.deepcopy(CLIENTS[ClientState.AWAIT_SHARE_KEYS_REQUEST])
    with pytest.raises(UnexpectedMessage) as info:
        client.receive(FRAMES[MESSAGE_TYPES[9]])  # UnmaskRequest too early
    text = str(info.value)
    assert "client 3" in text and "UnmaskRequest" in text and "ShareKeys" in text
    assert info.value.phase == "ShareKeys" and info.value.round == CONFIG.round


@pytest.mark.parametrize("phase", [p for p in Phase if p not in (Phase.COMPLETED, Phase.ABORTED)],
                         ids=lambda p: p.value)
@pytest.mark.parametrize("msg_type", list(MESSAGE_TYPES.values()), ids=lambda t: t.__name__)
def test_server_every_phase_message_pair(phase, msg_type):
    """The server never raises for a peer's frame: it accepts, ignores (counted) or excludes."""
    server = copy.deepcopy(SERVERS[phase])
    state = server.peers[CLIENT]
    expected = SERVER_TRANSITIONS.get((state, msg_type))
    ignored = server.ignored.total
    server.receive(FRAMES[msg_type], CLIENT)
    if CLIENT in server.excluded:
        exc = server.excluded[CLIENT]
        assert server.peers[CLIENT] is PeerState.EXCLUDED and isinstance(exc, RemoteProtocolError)
        assert exc.client == CLIENT and exc.phase == phase.value and f"client {CLIENT}" in str(exc)
        assert expected is None
    elif server.ignored.total > ignored:
        assert expected is None and state not in PEER_ENDED  # the frame it already accepted
    else:
        assert expected is not None, f"{msg_type.__name__} accepted from a client in {state.value}"


def test_a_byte_identical_repeat_is_ignored_and_a_different_one_is_equivocation():
    server = copy.deepcopy(SERVERS[Phase.SHARE_KEYS])
    server.receive(FRAMES[AdvertiseKeys], CLIENT)  # the network delivered it twice
    assert server.ignored.counts["duplicate"] == 1 and CLIENT not in server.excluded
    other = decode(FRAMES[AdvertiseKeys])
    other = replace(other, mask_key=other.encryption_key)
    server.receive(encode(other), CLIENT)
    assert isinstance(server.excluded[CLIENT], Equivocation)
    assert "second, different AdvertiseKeys" in str(server.excluded[CLIENT])


def test_a_frame_from_another_round_is_ignored_by_both_sides():
    server = copy.deepcopy(SERVERS[Phase.ADVERTISE_KEYS])
    stale = replace(decode(FRAMES[AdvertiseKeys]), round=CONFIG.round + 1)
    server.receive(encode(stale), CLIENT)
    assert server.ignored.counts["another session or round"] == 1 and not server.excluded
    client = copy.deepcopy(CLIENTS[ClientState.AWAIT_SHARE_KEYS_REQUEST])
    req = decode(FRAMES[MESSAGE_TYPES[3]])
    assert client.receive(encode(replace(req, round=req.round + 1))) == []
    assert client.state is ClientState.AWAIT_SHARE_KEYS_REQUEST
    assert client.ignored.counts["another session or round"] == 1


def test_a_frame_claiming_another_sender_is_blamed_on_the_connection():
    server = copy.deepcopy(SERVERS[Phase.ADVERTISE_KEYS])
    server.receive(FRAMES[AdvertiseKeys], CLIENT + 1)
    assert "claims to be from client 3" in str(server.excluded[CLIENT + 1])
    server.receive(FRAMES[MESSAGE_TYPES[1]], 0)  # nobody is client 0
    assert server.ignored.counts["unknown sender"] == 1


def test_api_misuse_is_a_local_error():
    server = copy.deepcopy(SERVERS[Phase.ADVERTISE_KEYS])
    with pytest.raises(LocalProtocolError, match="twice"):
        server.start()
    with pytest.raises(LocalProtocolError, match="no result yet"):
        server.result()
    client = copy.deepcopy(CLIENTS[ClientState.AWAIT_UNMASK_REQUEST])
    with pytest.raises(LocalProtocolError, match="too late"):
        client.provide_input(None)


def test_masked_input_request_without_input_is_local_misuse_and_recoverable():
    config = make_config(6, 4, label="no-input")
    h = Harness(config, label="no-input")
    h.clients[2]._raw_input = h.clients[2]._ring_input = None  # its pipeline has no update yet
    h.run(until=Phase.MASKED_INPUT)
    request = encode(h.requests()[2])
    with pytest.raises(LocalProtocolError, match="provide_input"):
        h.clients[2].receive(request)
    assert h.clients[2].state is ClientState.AWAIT_MASKED_INPUT_REQUEST
    h.clients[2].provide_input(np.zeros(4))
    (reply,) = h.clients[2].receive(request)
    assert decode(reply.frame).name == "MaskedInput"


def test_core_does_no_io():
    """The protocol core imports no asyncio, socket or MQTT client (STYLE.md)."""
    import ast

    root = Path(__file__).resolve().parent.parent / "secagg"
    core = [*root.glob("protocol/*.py"), *root.glob("crypto/*.py"),
            root / "messages.py", root / "codec.py", root / "config.py", root / "graph.py",
            root / "params.py", root / "quantize.py", root / "errors.py"]
    banned = {"asyncio", "socket", "aiomqtt", "paho", "threading", "time", "random", "pickle", "selectors"}
    for path in core:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"
