//! What a cluster accepts from the others' ClusterEndpoints, as its operator sets it on the
//! controller and on every gateway and route agent (the same chart values reach both).

use std::net::IpAddr;

use causeway_crds::validate::{Acceptance, PRIVATE_RANGES};
use ipnet::IpNet;
use kube::Config;

/// The flags that set a cluster's [`Acceptance`].
#[derive(Debug, Clone, clap::Args)]
pub struct AcceptanceArgs {
    /// Ranges other clusters' pod and service CIDRs must lie in (comma-separated); a
    /// ClusterEndpoint claiming anything else is refused here. Default: the private ranges.
    #[arg(
        long,
        env = "CAUSEWAY_ALLOWED_REMOTE_CIDRS",
        value_delimiter = ',',
        default_values = PRIVATE_RANGES
    )]
    pub allowed_remote_cidrs: Vec<IpNet>,
    /// Ranges no other cluster may claim (comma-separated): this cluster's node network,
    /// load balancers, anything its nodes must reach directly. The API server's address
    /// is always protected.
    #[arg(long, env = "CAUSEWAY_PROTECTED_CIDRS", value_delimiter = ',')]
    pub protected_cidrs: Vec<IpNet>,
}

impl AcceptanceArgs {
    /// The acceptance these flags give, the API server of `config` protected too.
    pub fn acceptance(&self, config: &Config) -> Acceptance {
        let mut protected = self.protected_cidrs.clone();
        protected.extend(api_server_address(config).map(IpNet::from));
        Acceptance {
            allowed: self.allowed_remote_cidrs.clone(),
            protected,
        }
    }
}

/// The API server's address, when the client reaches it by IP address (a host name is
/// resolved by the node's resolver, not routed by us).
pub fn api_server_address(config: &Config) -> Option<IpAddr> {
    let host = config.cluster_url.host()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        acceptance: AcceptanceArgs,
    }

    #[test]
    fn defaults_are_the_private_ranges_and_the_api_server_is_protected() {
        let flags = Flags::parse_from(["x"]);
        let config = Config::new("https://198.19.1.2:6443".parse().unwrap());
        let acceptance = flags.acceptance.acceptance(&config);
        assert_eq!(acceptance.allowed, Acceptance::default().allowed);
        assert_eq!(
            acceptance.protected,
            vec!["198.19.1.2/32".parse::<IpNet>().unwrap()]
        );
        let flags = Flags::parse_from([
            "x",
            "--allowed-remote-cidrs",
            "10.0.0.0/8,fd00::/8",
            "--protected-cidrs",
            "10.250.0.0/16",
        ]);
        let config = Config::new("https://[fd00::2]:6443".parse().unwrap());
        let acceptance = flags.acceptance.acceptance(&config);
        assert_eq!(acceptance.allowed.len(), 2);
        assert_eq!(
            acceptance.protected,
            vec![
                "10.250.0.0/16".parse::<IpNet>().unwrap(),
                "fd00::2/128".parse().unwrap()
            ]
        );
        let by_name = Config::new("https://kubernetes.default.svc".parse().unwrap());
        assert_eq!(api_server_address(&by_name), None);
    }
}
