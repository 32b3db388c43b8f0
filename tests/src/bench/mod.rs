//! `causeway-bench`: Causeway's datapath against raw veth and the stock
//! `boringtun-cli` on one namespace pair, plus the scale figures, printed as
//! tables and written as JSON.
//!
//! The arithmetic, parsing and formatting ([`stats`], [`iperf`]'s parser,
//! [`report`]) are pure and unit-tested; [`datapath`] and [`scale`] drive the
//! namespaces, processes and traffic. Everything runs in namespaces the
//! benchmark creates and deletes; underlay addresses are from 198.18.0.0/15.

pub mod datapath;
pub mod iperf;
pub mod report;
pub mod responder;
pub mod scale;
pub mod services;
pub mod stats;
pub mod wg;
pub mod world;
