//! The certificates and keys of one cluster's control plane: a CA, the API server's serving
//! certificate, client certificates for people and components, and the ServiceAccount token
//! signing key pair. Written as PEM files that kube-apiserver, kube-controller-manager and
//! kubeconfigs name.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::super::{io_context, HarnessError};

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct CertPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key (PKCS#8), PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of test output.
        f.debug_struct("CertPair").finish_non_exhaustive()
    }
}

/// One cluster's PKI, kept in files under a directory.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).finish()
    }
}

fn pki_error(what: &str) -> impl FnOnce(rcgen::Error) -> HarnessError + '_ {
    move |e| HarnessError::ControlPlane(format!("cannot make {what}: {e}"))
}

impl Pki {
    /// Creates a CA named `name` and the files every control plane needs in `dir`:
    /// `ca.crt`, `apiserver.crt`/`.key` for `sans` (and the in-cluster service names),
    /// `sa.key`/`sa.pub` for ServiceAccount tokens.
    pub fn create(dir: &Path, name: &str, sans: &[IpAddr]) -> Result<Pki, HarnessError> {
        std::fs::create_dir_all(dir).map_err(io_context(format!("create {}", dir.display())))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(pki_error("CA parameters"))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name}-ca"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().map_err(pki_error("the CA key"))?;
        let ca = params.self_signed(&key).map_err(pki_error("the CA"))?;
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        };
        pki.write("ca.crt", &pki.ca_pem)?;

        let mut names: Vec<String> = sans.iter().map(ToString::to_string).collect();
        names.extend(
            [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from),
        );
        let serving = pki.issue(
            names,
            "kube-apiserver",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        pki.write("apiserver.crt", &serving.cert_pem)?;
        pki.write("apiserver.key", &serving.key_pem)?;

        let sa = KeyPair::generate().map_err(pki_error("the ServiceAccount signing key"))?;
        pki.write("sa.key", &sa.serialize_pem())?;
        pki.write("sa.pub", &sa.public_key_pem())?;
        Ok(pki)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Path of a file this PKI wrote (`ca.crt`, `apiserver.crt`, `sa.key`, ...).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A client certificate for user `user`, in `group` if given (how people and the
    /// control plane's own components authenticate). One group: rcgen keeps one value per
    /// name attribute.
    pub fn client(&self, user: &str, group: Option<&str>) -> Result<CertPair, HarnessError> {
        self.issue(Vec::new(), user, group, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        sans: Vec<String>,
        common_name: &str,
        organization: Option<&str>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<CertPair, HarnessError> {
        let what = format!("a certificate for {common_name}");
        let mut params = CertificateParams::new(sans).map_err(pki_error(&what))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(o) = organization {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().map_err(pki_error(&what))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(pki_error(&what))?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn write(&self, file: &str, contents: &str) -> Result<(), HarnessError> {
        let path = self.path(file);
        std::fs::write(&path, contents).map_err(io_context(format!("write {}", path.display())))
    }
}
