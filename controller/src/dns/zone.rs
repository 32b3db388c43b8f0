//! The `clusterset.local` zone as a value: built by [`build_zone`] from the local
//! ServiceImports, Causeway's EndpointSlices and the set of healthy remote clusters,
//! with no I/O, and read by the server through [`Zone::lookup`].
//!
//! The rules are those of `docs/services.md`, section "DNS"; the choices the
//! contract leaves open are documented on [`build_zone`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use causeway_crds::mcs::{LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER};
use causeway_crds::{ConnectionState, Gateway, GatewayRole, ServiceImport, ServiceImportType};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use thiserror::Error;

/// The zone's apex.
pub const ZONE: &str = "clusterset.local.";
/// EndpointSlice label naming the controller that manages the slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on the slices Causeway imports.
pub const MANAGED_BY: &str = "causeway.dev";
/// The MCS DNS specification version answered at `dns-version.clusterset.local` TXT.
pub const DNS_SCHEMA_VERSION: &str = "1.0.0";

/// Everything one zone is built from.
#[derive(Debug, Clone, Copy)]
pub struct ZoneInput<'a> {
    /// This cluster's ID: its endpoints are always served, and preferred for ClusterSetIP.
    pub cluster_id: &'a str,
    /// The local ServiceImports, all namespaces.
    pub imports: &'a [ServiceImport],
    /// The local EndpointSlices managed by Causeway, all namespaces.
    pub slices: &'a [EndpointSlice],
    /// Remote clusters whose tunnel is up (see [`healthy_clusters`]).
    pub healthy: &'a BTreeSet<String>,
    /// TTL of every record, and the negative-caching time in the SOA.
    pub ttl: Duration,
    /// SOA serial; only needs to grow between builds.
    pub serial: u32,
}

/// Something in the input that could not be served; the rest of the zone is built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ZoneProblem {
    /// A ServiceImport's name or namespace cannot be a DNS label.
    #[error("ServiceImport {namespace}/{name}: its {what} is not a DNS label (1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'), so it gets no clusterset.local name; rename the exported Service or its namespace")]
    ImportName {
        /// Namespace of the ServiceImport.
        namespace: String,
        /// Name of the ServiceImport.
        name: String,
        /// `name` or `namespace`.
        what: &'static str,
    },
    /// A ServiceImport port cannot be served as SRV.
    #[error("ServiceImport {namespace}/{name}: port {port:?} gets no SRV record: {why}; fix the port on the exported Service")]
    Port {
        /// Namespace of the ServiceImport.
        namespace: String,
        /// Name of the ServiceImport.
        name: String,
        /// The port's name (or number when it has none).
        port: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A slice's source cluster label cannot be a DNS label.
    #[error("EndpointSlice {namespace}/{name}: label {LABEL_SOURCE_CLUSTER}={cluster:?} is not a DNS label, so the slice is not served; give the exporting cluster an ID of a-z, 0-9 and '-'")]
    SliceCluster {
        /// Namespace of the slice.
        namespace: String,
        /// Name of the slice.
        name: String,
        /// The label's value.
        cluster: String,
    },
    /// An endpoint address is not an IP address.
    #[error("EndpointSlice {namespace}/{name}: address {address:?} is not an IPv4 or IPv6 address and is not served; only IP endpoints can be answered in clusterset.local")]
    Address {
        /// Namespace of the slice.
        namespace: String,
        /// Name of the slice.
        name: String,
        /// The address as written.
        address: String,
    },
    /// An endpoint hostname cannot be a DNS label.
    #[error("EndpointSlice {namespace}/{name}: endpoint hostname {hostname:?} is not a DNS label, so it gets no <hostname>.<cluster> name or SRV record (its address is still served); fix the Pod's hostname or subdomain")]
    Hostname {
        /// Namespace of the slice.
        namespace: String,
        /// Name of the slice.
        name: String,
        /// The hostname as written.
        hostname: String,
    },
    /// A name is longer than DNS allows.
    #[error("{name} is longer than the 255 bytes a DNS name may have and is not served; shorten the service, namespace, cluster or host name")]
    NameTooLong {
        /// The name that was built.
        name: String,
    },
}

/// What the zone holds for a name and type.
#[derive(Debug, PartialEq)]
pub enum Lookup<'z> {
    /// The records of that name and type (never empty).
    Answer(Vec<&'z Record>),
    /// The name exists (perhaps as an empty non-terminal) but has no records of that type.
    NoData,
    /// Nothing exists at or below the name.
    NxDomain,
    /// The name is outside `clusterset.local`.
    Refused,
}

/// An immutable `clusterset.local` zone: every existing name (empty non-terminals
/// included) and its records.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: LowerName,
    soa: Record,
    names: HashMap<LowerName, Vec<Record>>,
}

impl Zone {
    /// A zone with nothing but the apex SOA and the `dns-version` TXT record.
    pub fn empty(ttl: Duration, serial: u32) -> Zone {
        let (zone, _) = build_zone(&ZoneInput {
            cluster_id: "",
            imports: &[],
            slices: &[],
            healthy: &BTreeSet::new(),
            ttl,
            serial,
        });
        zone
    }

    /// The records answering `name` and `qtype` (`ANY`: every record of the name).
    pub fn lookup(&self, name: &LowerName, qtype: RecordType) -> Lookup<'_> {
        if !self.origin.zone_of(name) {
            return Lookup::Refused;
        }
        let Some(records) = self.names.get(name) else {
            return Lookup::NxDomain;
        };
        let hits: Vec<&Record> = records
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .collect();
        if hits.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Answer(hits)
        }
    }

    /// The apex SOA, for the authority section of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// How many names exist (empty non-terminals included).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// How many records the zone holds.
    pub fn record_count(&self) -> usize {
        self.names.values().map(Vec::len).sum()
    }
}

/// The remote clusters whose tunnel is up: every connection in state `connected`
/// of a Gateway whose status says `active` (normally one; during a failover the
/// union) and that is not being deleted. No active Gateway: no healthy remote.
pub fn healthy_clusters(gateways: &[Gateway]) -> BTreeSet<String> {
    gateways
        .iter()
        .filter(|g| g.metadata.deletion_timestamp.is_none())
        .filter_map(|g| g.status.as_ref())
        .filter(|s| s.role == Some(GatewayRole::Active))
        .flat_map(|s| &s.connections)
        .filter(|c| c.state == ConnectionState::Connected)
        .map(|c| c.cluster_id.to_ascii_lowercase())
        .collect()
}

/// Builds the zone of `input` (`docs/services.md`, "DNS"), and lists what could not be served.
///
/// Choices the contract leaves open:
/// - A service exists (its names answer NODATA rather than NXDOMAIN) as long as its
///   ServiceImport does, even with no ready endpoint anywhere, headless included
///   (the MCS spec allows NXDOMAIN; NODATA tells a client the name is right).
/// - `<cluster>.<svc>` exists for every cluster with a slice or listed in the
///   import's `status.clusters`; it answers only ready endpoints (ClusterSetIP: the
///   ClusterIP only while a backend is ready).
/// - `<hostname>.<cluster>.<svc>` exists for every endpoint with a hostname, ready or
///   not; it answers the addresses only while the endpoint is ready.
/// - ClusterSetIP local-first is decided per service, not per address family: when
///   the local cluster has a ready backend, `<svc>` answers only local addresses, so
///   a dual-stack client never prefers a remote IPv6 address over a local IPv4 one.
/// - SRV (priority 0, weights summing to about 100 as in CoreDNS): ClusterSetIP
///   targets `<svc>` with the import's port, while `<svc>` has an address; headless
///   targets `<hostname>.<cluster>.<svc>` of each ready endpoint with a hostname in
///   the local and healthy clusters, with the endpoint's slice port of that name.
///   No additional section, so that a large answer is not truncated for extras.
/// - An endpoint without `conditions.ready` counts as ready (Kubernetes semantics).
/// - Every name is lowercase; lookups are case-insensitive.
pub fn build_zone(input: &ZoneInput<'_>) -> (Zone, Vec<ZoneProblem>) {
    let mut draft = Draft::default();
    draft.add(
        &format!("dns-version.{ZONE}"),
        Data::Txt(DNS_SCHEMA_VERSION),
    );
    let local = input.cluster_id.to_ascii_lowercase();
    let mut problems = Vec::new();
    for service in collect(input, &mut problems).values() {
        service.emit(&local, input.healthy, &mut draft, &mut problems);
    }
    let zone = draft.finish(input.ttl, input.serial, &mut problems);
    (zone, problems)
}

/// A record's data before it becomes a hickory `Record`; ordered, so that a name's
/// records are deduplicated and the zone does not depend on input order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Txt(&'static str),
}

impl Data {
    fn ip(ip: IpAddr) -> Data {
        match ip {
            IpAddr::V4(v4) => Data::A(v4),
            IpAddr::V6(v6) => Data::Aaaa(v6),
        }
    }
}

/// Names (lowercase, absolute) and their records, before the ancestors are added.
#[derive(Default)]
struct Draft {
    names: BTreeMap<String, BTreeSet<Data>>,
}

impl Draft {
    /// Makes `name` exist, with or without records.
    fn touch(&mut self, name: &str) {
        self.names.entry(name.to_owned()).or_default();
    }

    fn add(&mut self, name: &str, data: Data) {
        self.names.entry(name.to_owned()).or_default().insert(data);
    }

    fn has_records(&self, name: &str) -> bool {
        self.names.get(name).is_some_and(|d| !d.is_empty())
    }

    fn finish(self, ttl: Duration, serial: u32, problems: &mut Vec<ZoneProblem>) -> Zone {
        let ttl = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        let origin = apex();
        let soa = Record::from_rdata(
            origin.clone(),
            ttl,
            RData::SOA(SOA::new(
                in_zone("ns.dns"),
                in_zone("hostmaster"),
                serial,
                // Refresh, retry and expire matter only to secondaries, which this zone has none of.
                7200,
                1800,
                86400,
                // Negative answers are cached for min(SOA TTL, minimum) (RFC 2308): the same TTL.
                ttl,
            )),
        );
        let origin_lower = LowerName::from(&origin);
        let mut names: HashMap<LowerName, Vec<Record>> = HashMap::new();
        names.insert(origin_lower.clone(), vec![soa.clone()]);
        for (text, data) in self.names {
            let Ok(name) = Name::from_ascii(&text) else {
                problems.push(ZoneProblem::NameTooLong { name: text });
                continue;
            };
            // Every ancestor up to the apex exists: an empty non-terminal is NODATA (RFC 8020).
            let mut parent = name.base_name();
            while parent.num_labels() > origin.num_labels() {
                names.entry(LowerName::from(&parent)).or_default();
                parent = parent.base_name();
            }
            let records = names.entry(LowerName::from(&name)).or_default();
            records.extend(data.into_iter().map(|d| record(&name, ttl, d)));
        }
        Zone {
            origin: origin_lower,
            soa,
            names,
        }
    }
}

fn record(name: &Name, ttl: u32, data: Data) -> Record {
    let rdata = match data {
        Data::A(v4) => RData::A(A(v4)),
        Data::Aaaa(v6) => RData::AAAA(AAAA(v6)),
        Data::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(
            priority,
            weight,
            port,
            // Targets were checked to parse when the SRV was drafted.
            Name::from_ascii(&target).unwrap_or_else(|_| apex()),
        )),
        Data::Txt(text) => RData::TXT(TXT::new(vec![text.to_owned()])),
    };
    Record::from_rdata(name.clone(), ttl, rdata)
}

fn apex() -> Name {
    Name::from_ascii(ZONE).unwrap_or_else(|_| Name::root())
}

fn in_zone(label: &str) -> Name {
    Name::from_ascii(format!("{label}.{ZONE}")).unwrap_or_else(|_| apex())
}

/// `text` lowercased when it can be one DNS label (RFC 1123: a-z, 0-9, '-', 1 to 63, no '-' at either end).
fn dns_label(text: &str) -> Option<String> {
    let label = text.to_ascii_lowercase();
    let ok = (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    ok.then_some(label)
}

/// One endpoint address of one slice.
struct Endpoint<'a> {
    ip: IpAddr,
    ready: bool,
    /// A valid DNS label, lowercase.
    hostname: Option<String>,
    ports: &'a [EndpointPort],
}

/// One service as the zone sees it: its import and its endpoints per source cluster.
struct Service<'a> {
    import: &'a ServiceImport,
    /// `<svc>.<ns>.svc.clusterset.local.`
    base: String,
    clusters: BTreeMap<String, Vec<Endpoint<'a>>>,
}

/// Groups the slices under the imports they belong to. Slices without an import in
/// their namespace are ignored: the import defines whether the service exists.
fn collect<'a>(
    input: &ZoneInput<'a>,
    problems: &mut Vec<ZoneProblem>,
) -> BTreeMap<(String, String), Service<'a>> {
    let mut services = BTreeMap::new();
    for import in input.imports {
        let namespace = import.metadata.namespace.as_deref().unwrap_or_default();
        let name = import.metadata.name.as_deref().unwrap_or_default();
        let problem = |what| ZoneProblem::ImportName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            what,
        };
        let (Some(svc), Some(ns)) = (dns_label(name), dns_label(namespace)) else {
            problems.push(problem(if dns_label(name).is_none() {
                "name"
            } else {
                "namespace"
            }));
            continue;
        };
        let mut clusters: BTreeMap<String, Vec<Endpoint<'a>>> = BTreeMap::new();
        let listed = import.status.iter().flat_map(|s| &s.clusters);
        for cluster in listed.filter_map(|c| dns_label(&c.cluster)) {
            clusters.entry(cluster).or_default();
        }
        let base = format!("{svc}.{ns}.svc.{ZONE}");
        services.insert(
            (ns, svc),
            Service {
                import,
                base,
                clusters,
            },
        );
    }
    for slice in input.slices {
        let labels = slice.metadata.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
        if label(MANAGED_BY_LABEL) != Some(MANAGED_BY) {
            continue;
        }
        let (Some(service), Some(cluster)) =
            (label(LABEL_SERVICE_NAME), label(LABEL_SOURCE_CLUSTER))
        else {
            continue;
        };
        let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
        let key = (namespace.to_ascii_lowercase(), service.to_ascii_lowercase());
        let Some(entry) = services.get_mut(&key) else {
            continue;
        };
        let Some(cluster) = dns_label(cluster) else {
            problems.push(ZoneProblem::SliceCluster {
                namespace: namespace.to_owned(),
                name: slice_name.to_owned(),
                cluster: cluster.to_owned(),
            });
            continue;
        };
        let endpoints = entry.clusters.entry(cluster).or_default();
        let ports = slice.ports.as_deref().unwrap_or_default();
        for endpoint in &slice.endpoints {
            // Kubernetes: an unknown readiness is to be taken as ready.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            let hostname = endpoint.hostname.as_deref().and_then(|h| {
                let label = dns_label(h);
                if label.is_none() {
                    problems.push(ZoneProblem::Hostname {
                        namespace: namespace.to_owned(),
                        name: slice_name.to_owned(),
                        hostname: h.to_owned(),
                    });
                }
                label
            });
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    problems.push(ZoneProblem::Address {
                        namespace: namespace.to_owned(),
                        name: slice_name.to_owned(),
                        address: address.clone(),
                    });
                    continue;
                };
                endpoints.push(Endpoint {
                    ip,
                    ready,
                    hostname: hostname.clone(),
                    ports,
                });
            }
        }
    }
    services
}

impl Service<'_> {
    fn emit(
        &self,
        local: &str,
        healthy: &BTreeSet<String>,
        draft: &mut Draft,
        problems: &mut Vec<ZoneProblem>,
    ) {
        let headless = self.import.spec.type_ == ServiceImportType::Headless;
        draft.touch(&self.base);
        for (cluster, endpoints) in &self.clusters {
            let cluster_name = format!("{cluster}.{}", self.base);
            draft.touch(&cluster_name);
            for endpoint in endpoints {
                if endpoint.ready {
                    draft.add(&cluster_name, Data::ip(endpoint.ip));
                }
                // Only a headless service's endpoints are pods; a ClusterSetIP slice holds the ClusterIP.
                if let (true, Some(host)) = (headless, &endpoint.hostname) {
                    let host_name = format!("{host}.{cluster_name}");
                    draft.touch(&host_name);
                    if endpoint.ready {
                        draft.add(&host_name, Data::ip(endpoint.ip));
                    }
                }
            }
        }
        let ready_in = |cluster: &str| {
            self.clusters
                .get(cluster)
                .into_iter()
                .flatten()
                .filter(|e| e.ready)
        };
        let reachable = |cluster: &&String| cluster.as_str() == local || healthy.contains(*cluster);
        let serving: Vec<&String> = if !headless && ready_in(local).next().is_some() {
            // Local first: traffic stays in the cluster while it has a ready backend.
            self.clusters
                .keys()
                .filter(|c| c.as_str() == local)
                .collect()
        } else {
            self.clusters.keys().filter(reachable).collect()
        };
        for cluster in &serving {
            for endpoint in ready_in(cluster) {
                draft.add(&self.base, Data::ip(endpoint.ip));
            }
        }
        self.emit_srv(&serving, headless, draft, problems);
    }

    fn emit_srv(
        &self,
        serving: &[&String],
        headless: bool,
        draft: &mut Draft,
        problems: &mut Vec<ZoneProblem>,
    ) {
        let namespace = self
            .import
            .metadata
            .namespace
            .as_deref()
            .unwrap_or_default();
        let name = self.import.metadata.name.as_deref().unwrap_or_default();
        for port in &self.import.spec.ports {
            let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                // Unnamed ports have no SRV name (Kubernetes DNS spec).
                continue;
            };
            let problem = |why| ZoneProblem::Port {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                port: port_name.to_owned(),
                why,
            };
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let (Some(label), Some(proto)) = (dns_label(port_name), dns_label(protocol)) else {
                problems.push(problem("its name or protocol is not a DNS label"));
                continue;
            };
            let Some(number) = u16::try_from(port.port).ok().filter(|n| *n != 0) else {
                problems.push(problem("its number is not between 1 and 65535"));
                continue;
            };
            let srv_name = format!("_{label}._{proto}.{}", self.base);
            draft.touch(&srv_name);
            if !headless {
                if draft.has_records(&self.base) {
                    draft.add(
                        &srv_name,
                        Data::Srv {
                            priority: 0,
                            weight: 100,
                            port: number,
                            target: self.base.clone(),
                        },
                    );
                }
                continue;
            }
            // One target per (cluster, hostname): the IPv4 and IPv6 slices name the same pod.
            let mut targets: BTreeMap<String, u16> = BTreeMap::new();
            for cluster in serving {
                let endpoints = self.clusters.get(*cluster).into_iter().flatten();
                for endpoint in endpoints.filter(|e| e.ready) {
                    let Some(host) = &endpoint.hostname else {
                        continue;
                    };
                    let target = format!("{host}.{cluster}.{}", self.base);
                    if Name::from_ascii(&target).is_err() {
                        // Too long: reported once, for the host name itself.
                        continue;
                    }
                    let number = slice_port(endpoint.ports, port_name, protocol).unwrap_or(number);
                    targets.entry(target).or_insert(number);
                }
            }
            let weight = u16::try_from(100 / targets.len().max(1))
                .unwrap_or(1)
                .max(1);
            for (target, port) in targets {
                draft.add(
                    &srv_name,
                    Data::Srv {
                        priority: 0,
                        weight,
                        port,
                        target,
                    },
                );
            }
        }
    }
}

/// The port a headless endpoint listens on for the service port `name`/`protocol`:
/// the slice's (the target port), which can differ from the Service's.
fn slice_port(ports: &[EndpointPort], name: &str, protocol: &str) -> Option<u16> {
    ports
        .iter()
        .filter(|p| p.name.as_deref() == Some(name))
        .filter(|p| {
            p.protocol
                .as_deref()
                .unwrap_or("TCP")
                .eq_ignore_ascii_case(protocol)
        })
        .find_map(|p| p.port.and_then(|n| u16::try_from(n).ok()))
}

#[cfg(test)]
mod tests;
