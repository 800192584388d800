"""A Flower ``Grid`` that runs every node's ``ClientApp`` in this process, for tests and benchmarks.

Each message goes through Flower's own protobuf serialisation both ways, as over a network, and
each node keeps its own ``Context`` across messages (as a SuperNode does). ``drop(node_id,
message)`` returning True makes a node not answer that message (a dropout); a node whose app
raises answers with an error reply, as Flower's runtime does.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.common.constant import ErrorCode
from flwr.common.serde import context_from_proto, context_to_proto, message_from_proto, message_to_proto
from flwr.serverapp.grid import Grid
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid(Grid):
    def __init__(self, app, node_ids, *, drop: Callable[[int, Message], bool] | None = None,
                 node_config: dict | None = None, fresh_process: bool = False) -> None:
        """``fresh_process``: each message runs on a context rebuilt from its protobuf form, as
        when a SuperNode runs each message in a new process (state survives only as records)."""
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
        self.app = app
        self.node_ids = list(node_ids)
        self.drop = drop
        self.contexts = {nid: Context(run_id=1, node_id=nid, node_config=dict(node_config or {}),
                                      state=RecordDict(), run_config={}) for nid in self.node_ids}
        self.client_seconds: dict[int, float] = defaultdict(float)
        self.bytes_down = 0  # serialised messages, server to nodes
        self.bytes_up = 0
        self.calls = 0
        self.fresh_process = fresh_process

    def set_run(self, run_id):  # noqa: D102
        pass

    @property
    def run(self):  # noqa: D102
        return None

    def create_message(self, *args, **kwargs):  # noqa: D102
        raise NotImplementedError

    def get_node_ids(self):  # noqa: D102
        return list(self.node_ids)

    def push_messages(self, messages):  # noqa: D102
        raise NotImplementedError

    def pull_messages(self, message_ids):  # noqa: D102
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        self.calls += 1
        replies = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            if msg.metadata.message_id == "":
                msg.metadata.__dict__["_message_id"] = msg.object_id
            wire = message_to_proto(msg)
            self.bytes_down += wire.ByteSize()
            if self.drop is not None and self.drop(nid, msg):
                continue
            t0 = time.perf_counter()
            incoming = message_from_proto(wire)
            if self.fresh_process:
                self.contexts[nid] = context_from_proto(context_to_proto(self.contexts[nid]))
            try:
                reply = self.app(incoming, self.contexts[nid])
            except Exception as exc:  # noqa: BLE001 - Flower's runtime turns it into an error reply
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                      reason=f"{type(exc)}:<'{exc}'>"), reply_to=incoming)
            if reply.metadata.message_id == "":
                reply.metadata.__dict__["_message_id"] = reply.object_id
            reply_wire = message_to_proto(reply)
            self.client_seconds[nid] += time.perf_counter() - t0
            self.bytes_up += reply_wire.ByteSize()
            replies.append(message_from_proto(reply_wire))
        return replies
