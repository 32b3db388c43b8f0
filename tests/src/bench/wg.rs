//! WireGuard keys for the benchmark's peers, and `boringtun-cli` configured
//! through its cross-platform UAPI socket (no `wg` tool needed).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use causeway_wire::keys::{format_key, parse_key};
use ipnet::IpNet;

/// Where boringtun puts `<interface>.sock`; shared by every network namespace.
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// A key pair made by `causeway-gateway genkey` / `pubkey`.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The private key, base64 as `wg genkey` prints it.
    pub private_b64: String,
    /// The public key, base64.
    pub public_b64: String,
}

impl KeyPair {
    /// Asks the gateway binary for a new key pair.
    pub fn generate(gateway: &Path) -> Result<KeyPair> {
        let private_b64 = run_with_stdin(Command::new(gateway).arg("genkey"), "")?;
        let public_b64 = run_with_stdin(Command::new(gateway).arg("pubkey"), &private_b64)?;
        Ok(KeyPair {
            private_b64: private_b64.trim().to_string(),
            public_b64: public_b64.trim().to_string(),
        })
    }

    /// A key pair made in-process (for the scale test's simulated peers).
    pub fn random() -> KeyPair {
        use rand_core::RngCore;
        let mut bytes = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut bytes);
        let secret = boringtun::x25519::StaticSecret::from(bytes);
        let public = boringtun::x25519::PublicKey::from(&secret);
        KeyPair {
            private_b64: format_key(&secret.to_bytes()),
            public_b64: format_key(public.as_bytes()),
        }
    }

    /// The raw private key.
    pub fn private_bytes(&self) -> Result<[u8; 32]> {
        parse_key(&self.private_b64).map_err(|e| anyhow::anyhow!("private key {e}"))
    }

    /// The raw public key.
    pub fn public_bytes(&self) -> Result<[u8; 32]> {
        parse_key(&self.public_b64).map_err(|e| anyhow::anyhow!("public key {e}"))
    }

    /// Writes the private key to `path` with mode 0600, as the gateway requires.
    pub fn write_private(&self, path: &Path) -> Result<()> {
        let mut file =
            fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        writeln!(file, "{}", self.private_b64)?;
        Ok(())
    }
}

/// Lower-case hex, as the UAPI wants keys.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A base64 key (as `genkey` prints it) in the UAPI's hex form.
pub fn base64_key_to_hex(b64: &str) -> Result<String> {
    let key = parse_key(b64).map_err(|e| anyhow::anyhow!("key {e}"))?;
    Ok(hex(&key))
}

/// The UAPI `set` request giving a device its key, port and one peer.
pub fn uapi_set_request(
    private_hex: &str,
    listen_port: u16,
    peer_public_hex: &str,
    endpoint: SocketAddr,
    allowed: &[IpNet],
) -> String {
    let mut text = format!(
        "set=1\nprivate_key={private_hex}\nlisten_port={listen_port}\nreplace_peers=true\n\
         public_key={peer_public_hex}\nendpoint={endpoint}\n"
    );
    for net in allowed {
        text += &format!("allowed_ip={net}\n");
    }
    text += "\n";
    text
}

/// The errno in a UAPI response (`errno=N` line); `None` if there is none.
pub fn uapi_errno(response: &str) -> Option<i32> {
    response
        .lines()
        .find_map(|l| l.strip_prefix("errno="))
        .and_then(|n| n.trim().parse().ok())
}

/// The UAPI socket of interface `ifname`.
pub fn uapi_socket(ifname: &str) -> PathBuf {
    Path::new(UAPI_DIR).join(format!("{ifname}.sock"))
}

/// Sends `request` over an open UAPI connection and checks the answer is `errno=0`.
pub fn uapi_set(mut conn: UnixStream, request: &str) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(request.as_bytes())?;
    let mut response = String::new();
    let mut reader = BufReader::new(conn);
    // The answer ends with an empty line.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\n" {
            break;
        }
        response += &line;
    }
    match uapi_errno(&response) {
        Some(0) => Ok(()),
        Some(n) => bail!("UAPI set failed: errno={n}"),
        None => bail!("UAPI answered {response:?}, expected errno=0"),
    }
}

/// Removes a UAPI socket file left behind by a `boringtun-cli` this benchmark started
/// (it does not clean up when stopped by a signal).
#[derive(Debug)]
pub struct UapiSocketCleanup(pub PathBuf);

impl Drop for UapiSocketCleanup {
    fn drop(&mut self) {
        match fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("causeway-bench: removing {}: {e}", self.0.display()),
        }
    }
}

fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Result<String> {
    let line = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {line}"))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{line} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_keys_become_hex() {
        // RFC 7748 section 6.1, Alice's public key.
        let b64 = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
        assert_eq!(
            base64_key_to_hex(b64).unwrap(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        assert!(base64_key_to_hex("not a key").is_err());
        assert_eq!(hex(&[0, 1, 0xab, 0xff]), "0001abff");
    }

    #[test]
    fn set_request_has_the_uapi_shape() {
        let text = uapi_set_request(
            "aa",
            51820,
            "bb",
            "198.18.100.2:51820".parse().unwrap(),
            &["10.2.0.0/16".parse().unwrap()],
        );
        assert_eq!(
            text,
            "set=1\nprivate_key=aa\nlisten_port=51820\nreplace_peers=true\n\
             public_key=bb\nendpoint=198.18.100.2:51820\nallowed_ip=10.2.0.0/16\n\n"
        );
    }

    #[test]
    fn errno_is_read_from_the_response() {
        assert_eq!(uapi_errno("errno=0\n"), Some(0));
        assert_eq!(uapi_errno("errno=-22\n"), Some(-22));
        assert_eq!(uapi_errno("protocol_version=1\nerrno=5\n"), Some(5));
        assert_eq!(uapi_errno(""), None);
    }

    #[test]
    fn random_key_pairs_are_consistent() {
        let pair = KeyPair::random();
        let private = pair.private_bytes().unwrap();
        let public =
            boringtun::x25519::PublicKey::from(&boringtun::x25519::StaticSecret::from(private));
        assert_eq!(public.to_bytes(), pair.public_bytes().unwrap());
        assert_ne!(pair.public_b64, KeyPair::random().public_b64);
    }
}
