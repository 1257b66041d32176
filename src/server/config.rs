//! `medlake.toml`: how the server listens, who may connect, and what each role may see.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:5433"
//! users = "users.toml"          # name → role and SCRAM-SHA-256 verifier (hashes only)
//! tls_cert = "server.crt"       # PEM; both or neither
//! tls_key = "server.key"
//! query_memory = "2GiB"         # DataFusion memory pool of each query
//! max_connections = 64
//! trust_loopback = false        # no password for connections from 127.0.0.1/::1
//!
//! [roles.analyst]
//! tables = ["*"]                           # every lake table (audit_log only by name)
//! deny_columns = ["PatientName", "PatientBirthDate"]
//! policies = { "*" = "collection IN ('lung-study-2026')" }
//! ```
//!
//! Paths are relative to the config file. A role named `admin`, or any role with
//! `admin = true`, is not restricted in any way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The users file; `users.toml` beside the config when not given.
    pub users: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Memory of each query's pool, e.g. "512MiB", "2GiB".
    #[serde(default = "default_query_memory")]
    pub query_memory: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Let loopback connections in without a password (the user must still exist).
    #[serde(default)]
    pub trust_loopback: bool,
}

fn default_listen() -> String {
    "127.0.0.1:5433".into()
}
fn default_query_memory() -> String {
    "2GiB".into()
}
fn default_max_connections() -> usize {
    64
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            users: None,
            tls_cert: None,
            tls_key: None,
            query_memory: default_query_memory(),
            max_connections: default_max_connections(),
            trust_loopback: false,
        }
    }
}

/// What a role may read.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// No restriction at all (also implied by the name `admin`).
    #[serde(default)]
    pub admin: bool,
    /// The tables the role may read; `"*"` is every lake table but `audit_log`.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Columns hidden in every table (and, for DICOM keywords, inside `dicom_json`).
    #[serde(default)]
    pub deny_columns: Vec<String>,
    /// Per table, the only columns the role may read (a column grant).
    #[serde(default)]
    pub columns: BTreeMap<String, Vec<String>>,
    /// Per table, a SQL predicate its rows must satisfy; `"*"` applies to every table that
    /// has the columns it names.
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
}

impl Role {
    pub fn is_admin(&self, name: &str) -> bool {
        self.admin || name == "admin"
    }
}

/// Parse a size such as `512MiB`, `2GiB`, `1.5GB` or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<usize> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| Error::Invalid(format!("size {s:?}: expected e.g. 512MiB or 2GiB")))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(Error::Invalid(format!(
                "size {s:?}: unknown unit {other:?}"
            )))
        }
    };
    Ok((n * mult) as usize)
}

impl Config {
    /// Read a config file; paths in it become relative to its folder.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.display(), e))?;
        let mut config: Config = toml::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut Option<PathBuf>| {
            if let Some(q) = p.as_mut() {
                if q.is_relative() {
                    *q = dir.join(&*q);
                }
            }
        };
        resolve(&mut config.server.tls_cert);
        resolve(&mut config.server.tls_key);
        resolve(&mut config.server.users);
        if config.server.users.is_none() {
            config.server.users = Some(dir.join("users.toml"));
        }
        config.check()?;
        Ok(config)
    }

    /// Errors a server would otherwise find only when a client connects.
    pub fn check(&self) -> Result<()> {
        self.listen_addr()?;
        parse_size(&self.server.query_memory)?;
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(Error::Invalid(
                "[server] tls_cert and tls_key go together: give both or neither".into(),
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.server.listen.parse().map_err(|e| {
            Error::Invalid(format!(
                "[server] listen = {:?}: {e} (expected host:port, e.g. 127.0.0.1:5433)",
                self.server.listen
            ))
        })
    }

    pub fn query_memory(&self) -> usize {
        parse_size(&self.server.query_memory).expect("checked at load")
    }

    /// A role by name: from `[roles]`, or the built-in unrestricted `admin`.
    pub fn role(&self, name: &str) -> Option<Role> {
        match self.roles.get(name) {
            Some(r) => Some(r.clone()),
            None if name == "admin" => Some(Role {
                admin: true,
                ..Default::default()
            }),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn roles_parse() {
        let c: Config = toml::from_str(
            r#"
            [server]
            listen = "127.0.0.1:6000"
            [roles.analyst]
            tables = ["*"]
            deny_columns = ["PatientName"]
            policies = { "*" = "collection = 'a'" }
            "#,
        )
        .unwrap();
        c.check().unwrap();
        let r = c.role("analyst").unwrap();
        assert!(!r.is_admin("analyst"));
        assert_eq!(r.policies["*"], "collection = 'a'");
        assert!(c.role("admin").unwrap().is_admin("admin"));
        assert!(c.role("nobody").is_none());
        assert!(toml::from_str::<Config>("[roles.x]\ntable = []").is_err());
    }
}
