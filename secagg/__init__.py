"""secagg: SecAgg+ secure aggregation for federated learning.

The server learns the exact sum of the clients' quantised updates and nothing else; rounds survive
dropouts at every stage, and a round that cannot finish aborts with a reason.

    >>> from secagg import RoundConfig, Server, Client
    >>> report = simulate(clients=20, dim=1000, dropout=0.1)   # in-process round
"""

from secagg import codec
from secagg.config import RoundConfig
from secagg.errors import (
    ConfigurationError,
    CryptoError,
    InconsistentRequest,
    InvalidInput,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    RoundAborted,
    SecAggError,
    BadShare,
    Equivocation,
    InvalidPublicKey,
    ShamirError,
    UnexpectedMessage,
)
from secagg.params import AdversaryClass, find_parameters, full_graph_parameters
from secagg.protocol.client import Client, ClientLimits
from secagg.protocol.rounds import ROUNDS, Phase, Stage
from secagg.protocol.seam import Outgoing
from secagg.protocol.server import RoundResult, Server
from secagg.simulate import SimulationReport, simulate
from secagg.transport.memory import Faults, InMemoryRouter

__version__ = "0.1.0"

__all__ = [
    "AdversaryClass",
    "BadShare",
    "Client",
    "ClientLimits",
    "ConfigurationError",
    "CryptoError",
    "Equivocation",
    "Faults",
    "InMemoryRouter",
    "InconsistentRequest",
    "InvalidInput",
    "InvalidPublicKey",
    "LocalProtocolError",
    "MalformedMessage",
    "Outgoing",
    "Phase",
    "ROUNDS",
    "RemoteProtocolError",
    "RoundAborted",
    "RoundConfig",
    "RoundResult",
    "SecAggError",
    "Server",
    "ShamirError",
    "SimulationReport",
    "Stage",
    "UnexpectedMessage",
    "codec",
    "find_parameters",
    "full_graph_parameters",
    "simulate",
]
