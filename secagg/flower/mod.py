"""The client side: a Flower mod with the contract of ``secaggplus_mod``.

``ClientApp(client_fn=..., mods=[secagg_mod])`` is the whole change for a Flower client. The mod
answers each secagg request with the sans-IO ``secagg.Client``; between messages the client lives
as bytes (``Client.snapshot``) in the node's context, because a SuperNode may run each message in
a new process. At the MaskedInput stage it calls the rest of the app (``call_next``) to train,
checks what comes back against the model's layout and masks it; the update never leaves the node
in the clear, nor does its sample count.

A train message without secagg's record is refused: a client with this mod never sends an update
outside secure aggregation. Other message types (evaluate, query) pass through untouched.

Every refusal raises a ``SecAggError`` whose text starts with ``[secagg:<Class>]`` and names the
node and the round, so the server can count it by class (Flower turns a ClientApp exception into
an error reply carrying that text); the server treats the node as dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from secagg.codec import canonical_cbor
from secagg.crypto.randomness import system_random
from secagg.errors import (
    ConfigurationError,
    InvalidInput,
    LocalProtocolError,
    MalformedMessage,
    ModelSignatureError,
    SecAggError,
    WeakConfig,
)
from secagg.flower.layout import RECORD, STATE, Layout, tagged
from secagg.protocol.client import Client, ClientLimits

ADVERTISE = "AdvertiseKeys"
MASKED_INPUT = "MaskedInput"


class _Refusal(Exception):
    """Carries a tagged message through Flower (which reports ``str(exc)``)."""


def make_secagg_mod(
    *,
    limits: ClientLimits = ClientLimits(),
    min_threshold: int = 2,
    min_noise_multiplier: float | None = None,
    budget: Callable | None = None,
    model_key=None,
    model_id: str | None = None,
):
    """A ``secagg_mod`` with this client's own rules.

    ``limits``, ``min_threshold``: as for ``secagg.Client``. ``min_noise_multiplier``: refuse a
    round whose privacy plan adds less noise (``None``: take the server's plan as it comes; a
    round without DP is then allowed too). ``budget``: ``context -> PrivacyBudget`` (persistent,
    per node): a DP round is charged to it and refused once it is spent. ``model_key``, ``model_id``:
    the operator's Ed25519 public key; the client then trains only on a global model the operator
    signed for this model id and a round newer than any it trained on (``secagg.model_signing``).
    """
    if (model_key is None) != (model_id is None):
        raise ConfigurationError("give both model_key and model_id, or neither")

    def secagg_mod(msg, ctxt, call_next):
        from flwr.app import ConfigRecord, Message, RecordDict
        from flwr.app.message_type import MessageType

        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        node, group = msg.metadata.dst_node_id, msg.metadata.group_id
        where = f"node {node}, round {group or '?'}"
        try:
            record = msg.content.config_records.get(RECORD)
            if record is None:
                raise MalformedMessage(
                    f"{where}: a train message without the '{RECORD}' record; this client sends "
                    "its update only through secure aggregation")
            frame, index, stage = _field(record, "frame", bytes, where), _field(record, "client", int, where), \
                _field(record, "stage", str, where)
            saved = ctxt.state.config_records.get(STATE)
            if stage == ADVERTISE:
                layout = Layout.from_bytes(_field(record, "layout", bytes, where))
                _check_plan(layout, min_noise_multiplier, where)
                model_round = int(saved["model_round"]) if saved is not None and "model_round" in saved else -1
                kwargs = _client_kwargs(layout, limits, min_threshold, budget, ctxt)
                client = Client(index, **kwargs)
            else:
                kwargs = {}
                if saved is None or "snapshot" not in saved:
                    raise LocalProtocolError(f"{where}: a {stage} request, but this node keeps no "
                                             "secagg round (it did not take part in its first stage)")
                layout = Layout.from_bytes(saved["layout"])
                model_round = int(saved["model_round"])
                client = Client.restore(saved["snapshot"],
                                        **_client_kwargs(layout, limits, min_threshold, budget, ctxt))
                if client.id != index:
                    raise MalformedMessage(f"{where}: addressed to client {index}; this node is "
                                           f"client {client.id} of its round")
            where = f"node {node} (client {index}), round {group or '?'}"
            content = RecordDict()
            if stage == MASKED_INPUT and client.phase == MASKED_INPUT:
                model_round = _train(client, layout, msg, ctxt, call_next, model_key, model_id,
                                     model_round, where)
            out = client.receive(frame)
            if client.finished:
                ctxt.state.config_records[STATE] = ConfigRecord({"model_round": model_round})
            else:
                ctxt.state.config_records[STATE] = ConfigRecord({
                    "snapshot": client.snapshot(), "layout": layout.to_bytes(), "model_round": model_round})
            reply = {"frame": out[0].frame if out else b""}
            charged = kwargs.get("encoder") if stage == ADVERTISE else None
            if out and getattr(charged, "budget", None) is not None:
                # Public numbers about this node's budget (never about its update): the server's
                # report of the population's budget state.
                reply["budget"] = canonical_cbor(charged.budget.report().as_dict())
            content[RECORD] = ConfigRecord(reply)
            return Message(content, reply_to=msg)
        except SecAggError as exc:
            text = str(exc)
            if where not in text and f"client {getattr(exc, 'client', None)}" not in text:
                text = f"{where}: {text}"
            raise _Refusal(tagged(type(exc)(text))) from None

    return secagg_mod


def _field(record, key: str, kind: type, where: str):
    if key not in record:
        raise MalformedMessage(f"{where}: the '{RECORD}' record has no '{key}'")
    value = record[key]
    if type(value) is not kind:
        raise MalformedMessage(f"{where}: '{RECORD}.{key}' is {type(value).__name__}, expected {kind.__name__}")
    return value


def _check_plan(layout: Layout, min_noise: float | None, where: str) -> None:
    if min_noise is None:
        return
    z = 0.0 if layout.plan is None else layout.plan.noise_multiplier
    if z < min_noise:
        raise WeakConfig(f"{where}: the round adds noise multiplier {z}; this client demands at "
                         f"least {min_noise}")


def _client_kwargs(layout: Layout, limits, min_threshold, budget, ctxt) -> dict:
    kwargs = dict(limits=limits, min_threshold=min_threshold, rng=system_random)
    if layout.plan is not None:
        from secagg.privacy.encoder import DPEncoder

        kwargs["encoder"] = DPEncoder(layout.plan, budget=None if budget is None else budget(ctxt))
    return kwargs


def _train(client, layout, msg, ctxt, call_next, model_key, model_id, model_round, where) -> int:
    """Run the app's training on the global model in ``msg`` and hand the result to ``client``."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import Code, parameters_to_ndarrays

    content = msg.content
    if layout.message_api:
        arrays = [r for r in content.array_records.values()]
        if len(arrays) != 1:
            raise MalformedMessage(f"{where}: the train message has {len(arrays)} ArrayRecords; expected 1")
        global_model = arrays[0].to_numpy_ndarrays()
    else:
        global_model = parameters_to_ndarrays(compat.recorddict_to_fitins(content, keep_input=True).parameters)
    if model_key is not None:
        from secagg.model_signing import verify_model

        signed = content.config_records.get(RECORD, {}).get("model_signature")
        try:
            record = verify_model(global_model, signed, model_key, min_round=model_round + 1,
                                  expected_model_id=model_id)
        except ModelSignatureError as exc:
            raise type(exc)(f"{where}: the global model is refused: {exc}") from None
        model_round = record.round
    base = layout.check_arrays(global_model, "the global model")
    try:
        reply = call_next(msg, ctxt)
    except Exception as exc:  # noqa: BLE001 - the app's own failure, reported as this node's refusal
        raise LocalProtocolError(f"{where}: training failed: {type(exc).__name__}: {exc}") from None
    if reply.has_error():
        raise LocalProtocolError(f"{where}: training failed: {reply.error.reason}")
    out = reply.content
    if layout.message_api:
        records = list(out.array_records.values())
        metrics = list(out.metric_records.values())
        if len(records) != 1 or len(metrics) != 1:
            raise InvalidInput(f"{where}: the app's reply has {len(records)} ArrayRecords and "
                               f"{len(metrics)} MetricRecords; expected one of each")
        if layout.weight_key not in metrics[0]:
            raise InvalidInput(f"{where}: the app's MetricRecord has no '{layout.weight_key}'")
        result, weight = records[0].to_numpy_ndarrays(), metrics[0][layout.weight_key]
    else:
        fitres = compat.recorddict_to_fitres(out, keep_input=True)
        if fitres.status.code != Code.OK:
            raise LocalProtocolError(f"{where}: fit returned status {fitres.status.code.name}: "
                                     f"{fitres.status.message}")
        result, weight = parameters_to_ndarrays(fitres.parameters), fitres.num_examples
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise InvalidInput(f"{where}: the sample count is {type(weight).__name__}, not a number")
    try:
        arrays = layout.check_arrays(result, "the trained model")
        if layout.plan is not None:
            client.provide_input([a - b for a, b in zip(arrays, base)])  # the delta, clipped by DPEncoder
        else:
            client.provide_input(layout.vector(arrays, float(weight)))
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    return model_round


secagg_mod = make_secagg_mod()
