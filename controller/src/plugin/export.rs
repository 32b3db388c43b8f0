//! `kubectl causeway export <namespace>/<service>`: creates the ServiceExport beside a
//! Service, after checking the Service exists (an export without one only earns a
//! `Valid=False NoService` condition later).

use causeway_crds::ServiceExport;
use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::{Api, Client};
use serde::Serialize;

use super::snapshot::PluginError;

/// What `export` did in one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportOutcome {
    /// The ServiceExport was created.
    Created,
    /// It existed already; nothing was written.
    AlreadyExported,
}

/// Splits `namespace/name`; a bare name is in `default`, as kubectl does.
pub fn parse_target(target: &str) -> Result<(String, String), PluginError> {
    let (ns, name) = target.split_once('/').unwrap_or(("default", target));
    if ns.is_empty() || name.is_empty() || name.contains('/') {
        return Err(PluginError::Target {
            target: target.to_owned(),
        });
    }
    Ok((ns.to_owned(), name.to_owned()))
}

/// Exports Service `namespace/name` through `client` (context `context`).
pub async fn export_service(
    client: Client,
    context: &str,
    namespace: &str,
    name: &str,
) -> Result<ExportOutcome, PluginError> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let write_error = |verb: &'static str| {
        let context = context.to_owned();
        let object = format!("{namespace}/{name}");
        move |source| PluginError::Write {
            context,
            verb,
            object,
            source: Box::new(source),
        }
    };
    if services
        .get_opt(name)
        .await
        .map_err(write_error("read Service"))?
        .is_none()
    {
        return Err(PluginError::NoService {
            context: context.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }
    let exports: Api<ServiceExport> = Api::namespaced(client, namespace);
    let export = ServiceExport::new(name, Default::default());
    match exports.create(&PostParams::default(), &export).await {
        Ok(_) => Ok(ExportOutcome::Created),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(ExportOutcome::AlreadyExported),
        Err(source) => Err(write_error("create ServiceExport")(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_like_kubectl() {
        assert_eq!(
            parse_target("prod/db").expect("ok"),
            ("prod".into(), "db".into())
        );
        assert_eq!(
            parse_target("db").expect("ok"),
            ("default".into(), "db".into())
        );
        for bad in ["", "prod/", "/db", "a/b/c"] {
            let err = parse_target(bad).expect_err(bad);
            assert!(err.to_string().contains("namespace/service"), "{err}");
        }
    }
}
