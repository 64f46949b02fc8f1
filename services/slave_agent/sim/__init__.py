"""Simulated slave-module hardware: cells, balancing, measurement chain and fault injection."""

from services.slave_agent.sim.balancing import (
    BALANCING_CURRENT_LIMIT_A,
    MAX_BALANCING_CURRENT_A,
    ActiveBalancer,
    ActiveTransfer,
    bleed_current_a,
)
from services.slave_agent.sim.cells import LFP_OCV_V, NMC_OCV_V, CellBank, CellBankParams
from services.slave_agent.sim.faults import ActiveFault, FaultKind, FaultSet, FaultTarget
from services.slave_agent.sim.measurement import MeasurementChain, MeasurementParams
from services.slave_agent.sim.module import Reading, SimulatedModule, Truth
from shared.messages.slave import ChannelFlag

__all__ = [
    "BALANCING_CURRENT_LIMIT_A",
    "LFP_OCV_V",
    "MAX_BALANCING_CURRENT_A",
    "NMC_OCV_V",
    "ActiveBalancer",
    "ActiveFault",
    "ActiveTransfer",
    "CellBank",
    "CellBankParams",
    "ChannelFlag",
    "FaultKind",
    "FaultSet",
    "FaultTarget",
    "MeasurementChain",
    "MeasurementParams",
    "Reading",
    "SimulatedModule",
    "Truth",
    "bleed_current_a",
]
