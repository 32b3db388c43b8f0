//! Causeway's API: the custom resource types, their validation, and CRD generation.
//!
//! Nothing here does I/O. The gateway, the controller and the tests all read and
//! check objects through this crate, so a rule (CIDR overlap, key format, cluster
//! ID syntax) lives in exactly one place.

// kube's `printcolumn(name = .., type_ = ..)` repeats its keys once per column, which
// this lint mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod cluster_endpoint;
pub mod crdgen;
pub mod gateway;
pub mod manifest;
pub mod mcs;
pub mod names;
pub mod rbac;
pub mod validate;

pub use cluster_endpoint::{
    ClusterEndpoint, ClusterEndpointSpec, ClusterEndpointStatus, GatewayEndpoint, RemoteRefusal,
};
pub use gateway::{
    ConnectionState, ConnectionStatus, Gateway, GatewayRole, GatewaySpec, GatewayStatus,
    RouteStatus,
};
pub use mcs::{
    ServiceExport, ServiceImport, ServiceImportSpec, ServiceImportStatus, ServiceImportType,
};
pub use validate::{Site, SiteGateway, ValidationError};

/// The API group of Causeway's own resources.
pub const GROUP: &str = "causeway.dev";
/// The API version of Causeway's own resources.
pub const VERSION: &str = "v1alpha1";
