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
    ShamirError,
    UnexpectedMessage,
)
from secagg.params import AdversaryClass, find_parameters, full_graph_parameters
from secagg.protocol.client import Client
from secagg.protocol.server import RoundResult, Server
from secagg.simulate import SimulationReport, Stage, simulate

__version__ = "0.1.0"

__all__ = [
    "AdversaryClass",
    "Client",
    "ConfigurationError",
    "CryptoError",
    "InconsistentRequest",
    "InvalidInput",
    "LocalProtocolError",
    "MalformedMessage",
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
