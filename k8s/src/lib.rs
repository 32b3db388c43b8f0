//! Kubernetes plumbing the controller, the gateway and the `kubectl causeway` plugin share:
//! API clients that explain a refused request ([`client`]) and leader election through a
//! Lease ([`leader`]). No Causeway logic lives here.

pub mod acceptance;
pub mod client;
pub mod leader;
