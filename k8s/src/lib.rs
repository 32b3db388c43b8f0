//! Kubernetes plumbing the controller, the gateway and the `kubectl causeway` plugin share:
//! API clients that explain a refused request ([`client`]), leader election through a
//! Lease ([`leader`]), and the watch-triggered pass runner ([`passes`]). No Causeway
//! logic lives here.

pub mod acceptance;
pub mod client;
pub mod leader;
pub mod passes;
