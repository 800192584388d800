"""Layer 3: the transition tables. Every (state, message) pair either moves on as the table says
or raises and leaves the peer in error (h2's test_state_machines.py)."""

import copy

import pytest

from secagg.errors import LocalProtocolError, RemoteProtocolError, UnexpectedMessage
from secagg.messages import MESSAGE_TYPES, Abort, AdvertiseKeys, MaskedInput
from secagg.protocol.client import Client
from secagg.protocol.states import (
    CLIENT_TRANSITIONS,
    SERVER_TRANSITIONS,
    ClientState,
    PeerState,
    Phase,
)

from harness import Harness, make_config

CLIENT = 3


def _snapshots():
    """A real round, with copies of client 3 and of the server taken at every step, and one
    genuine message of every type."""
    config = make_config(8, 5, bits=16, dropout_rate=0.1, label="transitions")
    h = Harness(config, label="transitions")
    clients, servers, messages = {}, {}, {}
    clients[h.clients[CLIENT].state] = copy.deepcopy(h.clients[CLIENT])
    while not h.server.finished:
        servers[h.server.phase] = copy.deepcopy(h.server)
        for m in h.outbox:
            if m.recipient == CLIENT:
                messages.setdefault(type(m), m)
        pending, h.outbox = h.outbox, []
        for m in pending:
            for reply in h.clients[m.recipient].receive(m):
                if reply.sender == CLIENT:
                    messages.setdefault(type(reply), reply)
                h.outbox += h.server.receive(reply)
            if m.recipient == CLIENT:
                clients.setdefault(h.clients[CLIENT].state, copy.deepcopy(h.clients[CLIENT]))
    messages[Abort] = Abort(session_id=config.session_id, round=config.round, sender=0,
                            recipient=CLIENT, reason="test")
    return config, clients, servers, messages


CONFIG, CLIENTS, SERVERS, MESSAGES = _snapshots()


def test_every_message_type_and_state_was_reached():
    assert set(MESSAGES) == set(MESSAGE_TYPES.values())
    assert set(CLIENTS) >= {s for s, _ in CLIENT_TRANSITIONS} - {ClientState.ABORTED}
    assert set(SERVERS) == {Phase.ADVERTISE_KEYS, Phase.SHARE_KEYS, Phase.MASKED_INPUT, Phase.UNMASK}


@pytest.mark.parametrize("state", list(ClientState), ids=lambda s: s.value)
@pytest.mark.parametrize("msg_type", list(MESSAGE_TYPES.values()), ids=lambda t: t.__name__)
def test_client_every_state_message_pair(state, msg_type):
    if state in CLIENTS:
        client = copy.deepcopy(CLIENTS[state])
    else:  # Aborted / Error: reach them from a fresh client
        client = Client(CLIENT)
        client.state = state
    msg = MESSAGES[msg_type]
    expected = CLIENT_TRANSITIONS.get((state, msg_type))
    try:
        out = client.receive(msg)
    except LocalProtocolError:
        pytest.fail("a genuine message must not look like local misuse")
    except RemoteProtocolError as exc:
        assert client.state is ClientState.ERROR
        assert exc.client == CLIENT and exc.state
        assert expected is None  # a genuine message in the table is always accepted
        return
    assert expected is not None, f"{msg_type.__name__} accepted in {state.value}"
    assert client.state is expected
    assert all(not m.FROM_SERVER for m in out)


def test_client_error_message_says_who_what_where():
    client = copy.deepcopy(CLIENTS[ClientState.AWAIT_SHARE_KEYS_REQUEST])
    with pytest.raises(UnexpectedMessage) as info:
        client.receive(MESSAGES[MESSAGE_TYPES[9]])  # UnmaskRequest too early
    text = str(info.value)
    assert "client 3" in text and "UnmaskRequest" in text and "AwaitShareKeysRequest" in text


@pytest.mark.parametrize("phase", [Phase.ADVERTISE_KEYS, Phase.SHARE_KEYS, Phase.MASKED_INPUT, Phase.UNMASK],
                         ids=lambda p: p.value)
@pytest.mark.parametrize("msg_type", [t for t in MESSAGE_TYPES.values() if not t.FROM_SERVER],
                         ids=lambda t: t.__name__)
def test_server_every_phase_message_pair(phase, msg_type):
    server = copy.deepcopy(SERVERS[phase])
    msg = MESSAGES[msg_type]
    state = server.peers[CLIENT]
    expected = SERVER_TRANSITIONS.get((state, msg_type))
    try:
        server.receive(msg)
    except RemoteProtocolError as exc:
        assert server.peers[CLIENT] is PeerState.ERROR
        assert exc.client == CLIENT
        assert expected is None
        return
    assert expected is not None, f"{msg_type.__name__} accepted from a client in {state.value}"
    assert server.peers[CLIENT] in (expected, PeerState.AWAIT_SHARES, PeerState.AWAIT_MASKED_INPUT,
                                    PeerState.AWAIT_UNMASK_RESPONSE, PeerState.UNMASKED)


def test_server_refuses_a_replay_and_names_the_round():
    server = copy.deepcopy(SERVERS[Phase.SHARE_KEYS])
    with pytest.raises(UnexpectedMessage) as info:
        server.receive(MESSAGES[AdvertiseKeys])
    assert "client 3 sent AdvertiseKeys in round ShareKeys" in str(info.value)
    assert server.peers[CLIENT] is PeerState.ERROR


def test_server_messages_from_server_types_are_refused():
    server = copy.deepcopy(SERVERS[Phase.ADVERTISE_KEYS])
    with pytest.raises(UnexpectedMessage, match="unknown client 0"):
        server.receive(MESSAGES[MESSAGE_TYPES[1]])


def test_wrong_round_is_refused_by_both_sides():
    from dataclasses import replace

    server = copy.deepcopy(SERVERS[Phase.ADVERTISE_KEYS])
    stale = replace(MESSAGES[AdvertiseKeys], round=CONFIG.round + 1)
    with pytest.raises(UnexpectedMessage, match="round"):
        server.receive(stale)
    client = copy.deepcopy(CLIENTS[ClientState.AWAIT_SHARE_KEYS_REQUEST])
    req = MESSAGES[MESSAGE_TYPES[3]]
    with pytest.raises(UnexpectedMessage, match="expected session"):
        client.receive(replace(req, round=req.round + 1))
    assert client.state is ClientState.ERROR


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
    import numpy as np

    config = make_config(6, 4, label="no-input")
    h = Harness(config, label="no-input")
    h.clients[2]._raw_input = None  # this client's pipeline has not produced its update
    h.clients[2].quantized_input = None
    h.phase()
    h.phase()
    request = next(m for m in h.outbox if m.recipient == 2)
    with pytest.raises(LocalProtocolError, match="provide_input"):
        h.clients[2].receive(request)
    assert h.clients[2].state is ClientState.AWAIT_MASKED_INPUT_REQUEST
    h.clients[2].provide_input(np.zeros(4))
    assert isinstance(h.clients[2].receive(request)[0], MaskedInput)


def test_core_does_no_io():
    """The protocol core imports no asyncio, socket or MQTT client (STYLE.md)."""
    import ast
    from pathlib import Path

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
