//! `kubectl causeway verify`: an end-to-end check between every pair of clusters.
//!
//! An operator's laptop cannot reach pod networks, so the checks run on each cluster's
//! active gateway (its agent on the metrics HTTP server, `GET /verify`), reached through
//! the API server's pod proxy. The gateway probes every remote gateway through the tunnel
//! right now, resolves the asked names with its cluster's DNS and connects to the answer.
//! The wire types the gateway answers with live in `causeway-wire`, so the gateway
//! needs no part of the controller. This module holds how a gateway's agent is reached
//! (`agent`: the Kubernetes I/O) and the pure judgement of its answers (`judgement`:
//! [`rows`]); the binary only fetches and prints. `diagnose`'s live `dns-answer` class
//! asks the same agent and is judged here too ([`dns_findings`]).

mod agent;
mod judgement;

pub use agent::{
    active_gateway_node, causeway_slices, find_gateway_pod, mint_agent_token, pick_pod, AgentToken,
    GatewayPod, VerifyError, AGENT_PORT_NAME, COMPONENT_LABEL, DEFAULT_AGENT_PORT,
    GATEWAY_COMPONENT,
};
pub use causeway_wire::verify::{AgentDns, AgentPeer, AgentTcp, AgentVerify, RttFigures};
pub use judgement::{
    dns_answer_problem, dns_expectations, dns_findings, rows, services_to_check, ClusterResult,
    DnsExpectation, Outcome, ServiceCheck, VerifyRow, HANDSHAKE_STALE,
};

#[cfg(test)]
mod tests;
