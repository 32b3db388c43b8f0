//! What each local ServiceExport amounts to: valid or not, and the broker objects
//! (a ServiceImport and one EndpointSlice per address family) a valid one publishes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use causeway_crds::mcs::{ServicePort, LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER};
use causeway_crds::names::{
    broker_endpoint_slice, broker_service_import, ENDPOINTSLICE_MANAGED_BY_LABEL,
    ENDPOINTSLICE_MANAGER, KUBERNETES_SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL,
};
use causeway_crds::{ServiceExport, ServiceImport, ServiceImportSpec, ServiceImportType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::objects::{is_causeway_slice, label, Family};
use super::{ObjectKey, Observed, REASON_INVALID_SERVICE_TYPE, REASON_NO_SERVICE};

/// What one local ServiceExport amounts to.
#[derive(Debug)]
pub(super) struct Verdict<'a> {
    pub(super) export: &'a ServiceExport,
    pub(super) key: ObjectKey,
    pub(super) outcome: Result<Desired, Invalid>,
}

/// Why an export is not valid: a `Valid=False` reason and message.
#[derive(Debug, Clone)]
pub(super) struct Invalid {
    pub(super) reason: &'static str,
    pub(super) message: String,
}

/// What a valid export publishes at the broker.
#[derive(Debug, Clone)]
pub(super) struct Desired {
    pub(super) import: ServiceImport,
    pub(super) slices: Vec<EndpointSlice>,
}

/// Every live local ServiceExport, judged valid (with what it publishes) or not, by key.
pub(super) fn judge_exports<'a>(
    cluster_id: &str,
    broker_namespace: &str,
    observed: &Observed<'a>,
    live_namespaces: &BTreeSet<&str>,
) -> Vec<Verdict<'a>> {
    let services: BTreeMap<ObjectKey, &Service> = observed
        .services
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .map(|s| (ObjectKey::of(s), s))
        .collect();
    // The Services' own slices (not Causeway's imports), by Service.
    let mut own_slices: BTreeMap<ObjectKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in observed.slices {
        if is_causeway_slice(slice) {
            continue;
        }
        if let Some(service) = label(&slice.metadata, KUBERNETES_SERVICE_NAME_LABEL) {
            let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
            own_slices
                .entry(ObjectKey::new(ns, service))
                .or_default()
                .push(slice);
        }
    }
    let mut verdicts: Vec<Verdict<'a>> = observed
        .exports
        .iter()
        .filter(|e| e.metadata.deletion_timestamp.is_none())
        .filter(|e| live_namespaces.contains(e.metadata.namespace.as_deref().unwrap_or_default()))
        .map(|export| {
            let key = ObjectKey::of(export);
            let outcome = match services.get(&key) {
                None => Err(Invalid {
                    reason: REASON_NO_SERVICE,
                    message: format!(
                        "Service {key} does not exist; create it, or delete this ServiceExport"
                    ),
                }),
                Some(service) if service_type(service) == "ExternalName" => Err(Invalid {
                    reason: REASON_INVALID_SERVICE_TYPE,
                    message: format!(
                        "Service {key} is of type ExternalName, which has no endpoints to export; \
                         export a ClusterIP or headless Service instead"
                    ),
                }),
                Some(service) => Ok(desired(
                    cluster_id,
                    broker_namespace,
                    export,
                    service,
                    own_slices.get(&key).map(Vec::as_slice).unwrap_or_default(),
                )),
            };
            Verdict {
                export,
                key,
                outcome,
            }
        })
        .collect();
    verdicts.sort_by(|a, b| a.key.cmp(&b.key));
    verdicts
}

/// The Service's type, `ClusterIP` when unset (as the API server defaults it).
fn service_type(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP")
}

/// The broker objects a valid export publishes.
fn desired(
    cluster_id: &str,
    broker_namespace: &str,
    export: &ServiceExport,
    service: &Service,
    own_slices: &[&EndpointSlice],
) -> Desired {
    let key = ObjectKey::of(export);
    let spec = service.spec.clone().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| ServicePort {
            name: p.name.clone().filter(|n| !n.is_empty()),
            // The API server defaults both; an unset one means the default.
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".to_owned())),
            app_protocol: p.app_protocol.clone(),
            port: p.port,
        })
        .collect();
    let ips: Vec<String> = if headless {
        Vec::new()
    } else {
        let mut ips = spec.cluster_ips.clone().unwrap_or_default();
        if ips.is_empty() {
            ips.extend(spec.cluster_ip.clone());
        }
        ips.retain(|ip| ip.parse::<IpAddr>().is_ok());
        ips
    };
    let session_affinity = spec
        .session_affinity
        .clone()
        .unwrap_or_else(|| "None".to_owned());
    let session_affinity_config = spec
        .session_affinity_config
        .clone()
        .filter(|_| session_affinity == "ClientIP");
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_SERVICE_NAME.to_owned(), key.name.clone());
    labels.insert(SERVICE_NAMESPACE_LABEL.to_owned(), key.namespace.clone());
    labels.insert(LABEL_SOURCE_CLUSTER.to_owned(), cluster_id.to_owned());
    let import = ServiceImport {
        metadata: ObjectMeta {
            name: Some(broker_service_import(&key.name, &key.namespace, cluster_id)),
            namespace: Some(broker_namespace.to_owned()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: ServiceImportSpec {
            ports: ports.clone(),
            ips: ips.clone(),
            type_: if headless {
                ServiceImportType::Headless
            } else {
                ServiceImportType::ClusterSetIP
            },
            session_affinity: Some(session_affinity),
            session_affinity_config,
        },
        status: None,
    };

    // Endpoints per address family.
    let mut by_family: BTreeMap<Family, Vec<Endpoint>> = BTreeMap::new();
    let backends = own_slices.iter().flat_map(|s| s.endpoints.iter());
    if headless {
        let mut seen: BTreeSet<(Family, Vec<String>)> = BTreeSet::new();
        for slice in own_slices {
            let Some(family) = Family::of_address_type(&slice.address_type) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                // One endpoint can sit in two slices while they are being rebalanced.
                if endpoint.addresses.is_empty()
                    || !seen.insert((family, endpoint.addresses.clone()))
                {
                    continue;
                }
                by_family.entry(family).or_default().push(Endpoint {
                    addresses: endpoint.addresses.clone(),
                    conditions: Some(EndpointConditions {
                        ready: Some(is_ready(endpoint)),
                        ..EndpointConditions::default()
                    }),
                    hostname: endpoint.hostname.clone(),
                    target_ref: endpoint.target_ref.clone(),
                    ..Endpoint::default()
                });
            }
        }
    } else {
        let ready = backends.clone().any(is_ready);
        for ip in &ips {
            let Ok(addr) = ip.parse::<IpAddr>() else {
                continue;
            };
            by_family
                .entry(Family::of(addr))
                .or_default()
                .push(Endpoint {
                    addresses: vec![ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(ready),
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                });
        }
    }
    let endpoint_ports = endpoint_ports(&ports);
    let mut slice_labels = labels;
    slice_labels.insert(
        ENDPOINTSLICE_MANAGED_BY_LABEL.to_owned(),
        ENDPOINTSLICE_MANAGER.to_owned(),
    );
    let slices = by_family
        .into_iter()
        .map(|(family, mut endpoints)| {
            endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(broker_endpoint_slice(
                        &key.name,
                        &key.namespace,
                        cluster_id,
                        family.suffix(),
                    )),
                    namespace: Some(broker_namespace.to_owned()),
                    labels: Some(slice_labels.clone()),
                    ..ObjectMeta::default()
                },
                address_type: family.address_type().to_owned(),
                endpoints,
                ports: endpoint_ports.clone(),
            }
        })
        .collect();
    Desired { import, slices }
}

/// An endpoint whose readiness is unknown counts as ready, as Kubernetes asks of consumers.
fn is_ready(endpoint: &Endpoint) -> bool {
    endpoint
        .conditions
        .as_ref()
        .and_then(|c| c.ready)
        .unwrap_or(true)
}

/// The Service's ports as EndpointSlice ports, in the form the API server stores them
/// (name and protocol defaulted), so a re-read compares equal.
fn endpoint_ports(ports: &[ServicePort]) -> Option<Vec<EndpointPort>> {
    (!ports.is_empty()).then(|| {
        ports
            .iter()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".to_owned())),
                app_protocol: p.app_protocol.clone(),
                port: Some(p.port),
            })
            .collect()
    })
}
