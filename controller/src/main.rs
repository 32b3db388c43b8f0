//! causeway-controller: publishes this cluster's ClusterEndpoint to the broker and mirrors the others.
//!
//! The control plane through the Kubernetes API is not built yet; until it is, this
//! binary says so and exits non-zero instead of pretending to run.

fn main() -> std::process::ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        println!("causeway-controller {version}");
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!(
        "causeway-controller {version}: the Kubernetes control plane is not implemented yet; \
         run `causeway-gateway standalone` with an endpoints file instead"
    );
    std::process::ExitCode::from(2)
}
