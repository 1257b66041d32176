//! Password authentication: SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL does it,
//! against verifiers in PostgreSQL's own format,
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
//!
//! Why not pgwire's SCRAM: it needs the salted password itself, which is enough to log in
//! as the user; a verifier (StoredKey, ServerKey) is not, so a leaked users file gives no
//! one a login. The users file therefore holds only verifiers (`medlake user add`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures::{Sink, SinkExt};
use hmac::{Hmac, KeyInit, Mac};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::{ClientInfo, PgWireConnectionState, METADATA_USER};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const MECHANISM: &str = "SCRAM-SHA-256";
/// PostgreSQL's default.
pub const ITERATIONS: u32 = 4096;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256 with one block: SCRAM's Hi().
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

/// What the server keeps of a password.
#[derive(Clone, PartialEq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// A new verifier for a password, with a random salt.
    pub fn create(password: &str) -> Verifier {
        let salt: [u8; 16] = rand::random();
        Verifier::with_salt(password, &salt, ITERATIONS)
    }

    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        // SASLprep as PostgreSQL applies it: when the password is not valid for it, the
        // raw bytes are used.
        let prepared = stringprep::saslprep(password)
            .map(|c| c.into_owned())
            .unwrap_or_else(|_| password.to_string());
        let salted = hi(prepared.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// PostgreSQL's text form (`pg_authid.rolpassword`).
    pub fn encode(&self) -> String {
        format!(
            "{MECHANISM}${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    pub fn parse(s: &str) -> std::result::Result<Verifier, String> {
        let bad = || {
            format!(
                "not a SCRAM-SHA-256 verifier (expected {MECHANISM}$<iterations>:<salt>$<StoredKey>:<ServerKey>; \
                 the users file never holds passwords: create entries with `medlake user add`)"
            )
        };
        let rest = s.strip_prefix(&format!("{MECHANISM}$")).ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iters, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let key = |k: &str| -> std::result::Result<[u8; 32], String> {
            B64.decode(k)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(bad)
        };
        let iterations: u32 = iters.parse().map_err(|_| bad())?;
        if iterations < 4096 {
            return Err(format!(
                "SCRAM iteration count {iterations} is below RFC 7677's minimum of 4096"
            ));
        }
        Ok(Verifier {
            iterations,
            salt: B64.decode(salt).map_err(|_| bad())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// One user of the users file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub role: String,
    /// A SCRAM-SHA-256 verifier.
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, UserEntry>,
}

/// The users a server accepts: name → (role, verifier).
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: BTreeMap<String, (String, Verifier)>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        let file: UsersFile = toml::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let mut users = BTreeMap::new();
        for (name, e) in file.users {
            let v = Verifier::parse(&e.password)
                .map_err(|m| Error::Invalid(format!("{}: user {name:?}: {m}", path.display())))?;
            users.insert(name, (e.role, v));
        }
        Ok(Users { users })
    }

    pub fn get(&self, name: &str) -> Option<&(String, Verifier)> {
        self.users.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn roles(&self) -> impl Iterator<Item = (&str, &str)> {
        self.users
            .iter()
            .map(|(n, (r, _))| (n.as_str(), r.as_str()))
    }
}

/// Add or replace a user in a users file (created when missing, mode 0600).
pub fn add_user(path: &Path, name: &str, role: &str, password: &str) -> Result<()> {
    if name.is_empty() || password.is_empty() {
        return Err(Error::Invalid("a user needs a name and a password".into()));
    }
    let mut file: UsersFile = match std::fs::read_to_string(path) {
        Ok(t) => {
            toml::from_str(&t).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => UsersFile::default(),
        Err(e) => return Err(Error::io(path.display(), e)),
    };
    file.users.insert(
        name.to_string(),
        UserEntry {
            role: role.to_string(),
            password: Verifier::create(password).encode(),
        },
    );
    let text = toml::to_string(&file).map_err(|e| Error::Invalid(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::io(tmp.display(), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(tmp.display(), e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display(), e))
}

/// Who a connection authenticated as.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub role: String,
}

enum State {
    Initial,
    /// Sent server-first; waiting for client-final.
    ServerFirstSent(Box<Exchange>),
    Done,
}

/// A SCRAM exchange between server-first and client-final.
struct Exchange {
    user: String,
    role: Option<String>,
    verifier: Verifier,
    auth_message_prefix: String,
    nonce: String,
    gs2_header: String,
}

/// The startup phase of one connection: SCRAM-SHA-256, or no password for loopback
/// clients when `trust_loopback` is set.
pub struct ScramStartup {
    users: Arc<Users>,
    trust_loopback: bool,
    /// Salts for unknown users come from this key, so a probe cannot tell unknown users
    /// from known ones by the salt changing between attempts (as PostgreSQL does).
    mock_key: [u8; 32],
    state: tokio::sync::Mutex<State>,
    login: Arc<Mutex<Option<Login>>>,
}

impl ScramStartup {
    pub fn new(
        users: Arc<Users>,
        trust_loopback: bool,
        mock_key: [u8; 32],
        login: Arc<Mutex<Option<Login>>>,
    ) -> Self {
        ScramStartup {
            users,
            trust_loopback,
            mock_key,
            state: tokio::sync::Mutex::new(State::Initial),
            login,
        }
    }
}

fn auth_failed(user: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        "28P01".into(),
        format!("password authentication failed for user \"{user}\""),
    )))
}

fn protocol(msg: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        "08P01".into(),
        format!("SCRAM exchange: {msg}"),
    )))
}

/// `key=value` attributes of a SCRAM message.
fn attribute(msg: &str, key: char) -> Option<&str> {
    msg.split(',')
        .find_map(|p| p.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// The mechanism and data of a SASLInitialResponse, read here rather than by pgwire, whose
/// decoder (0.41) trusts the data's length field and panics on one past the message's end.
fn sasl_initial_response(
    msg: pgwire::messages::startup::PasswordMessageFamily,
) -> PgWireResult<(String, Option<Vec<u8>>)> {
    use pgwire::messages::startup::PasswordMessageFamily as Family;
    let body = match msg {
        Family::Raw(body) => body,
        Family::SASLInitialResponse(r) => {
            return Ok((r.auth_method, r.data.map(|d| d.to_vec())));
        }
        _ => return Err(protocol("expected a SASLInitialResponse")),
    };
    let nul = body
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| protocol("SASLInitialResponse: the mechanism is not terminated"))?;
    let mechanism = String::from_utf8_lossy(&body[..nul]).into_owned();
    let rest = &body[nul + 1..];
    let (len, data) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| protocol("SASLInitialResponse: no data length"))?;
    let data = match i32::from_be_bytes(*len) {
        -1 => None,
        n if usize::try_from(n).is_ok_and(|n| n <= data.len()) => Some(data[..n as usize].to_vec()),
        n => {
            return Err(protocol(&format!(
                "SASLInitialResponse: a data length of {n} in a message of {} bytes",
                body.len()
            )))
        }
    };
    Ok((mechanism, data))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[async_trait::async_trait]
impl StartupHandler for ScramStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut params = DefaultServerParameterProvider::default();
        params.is_superuser = false;
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                if self.trust_loopback && client.socket_addr().ip().is_loopback() {
                    let Some((role, _)) = self.users.get(&user) else {
                        return Err(auth_failed(&user));
                    };
                    *self.login.lock().expect("not poisoned") = Some(Login {
                        user,
                        role: role.clone(),
                    });
                    *self.state.lock().await = State::Done;
                    return finish_authentication(client, &params).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                        vec![MECHANISM.to_string()],
                    )))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let mut state = self.state.lock().await;
                match std::mem::replace(&mut *state, State::Done) {
                    State::Initial => {
                        let (mechanism, data) = sasl_initial_response(msg)?;
                        if mechanism != MECHANISM {
                            return Err(protocol(&format!(
                                "mechanism {mechanism:?} is not offered"
                            )));
                        }
                        let data = data.ok_or_else(|| protocol("empty client-first"))?;
                        let text = std::str::from_utf8(&data)
                            .map_err(|_| protocol("client-first is not UTF-8"))?;
                        // gs2-header: channel binding flag, optional authzid.
                        let mut parts = text.splitn(3, ',');
                        let (cb, authz, bare) = (parts.next(), parts.next(), parts.next());
                        let (Some(cb), Some(authz), Some(bare)) = (cb, authz, bare) else {
                            return Err(protocol("malformed client-first"));
                        };
                        if cb.starts_with("p=") {
                            return Err(protocol("channel binding is not offered"));
                        }
                        if cb != "n" && cb != "y" {
                            return Err(protocol("malformed channel-binding flag"));
                        }
                        let client_nonce = attribute(bare, 'r')
                            .filter(|n| !n.is_empty())
                            .ok_or_else(|| protocol("client-first has no nonce"))?;
                        let user = client
                            .metadata()
                            .get(METADATA_USER)
                            .cloned()
                            .unwrap_or_default();
                        let (role, verifier) = match self.users.get(&user) {
                            Some((role, v)) => (Some(role.clone()), v.clone()),
                            None => {
                                let salt = hmac(&self.mock_key, user.as_bytes());
                                let mut v = Verifier::with_salt("", &salt[..16], ITERATIONS);
                                v.stored_key = hmac(&self.mock_key, b"never matches");
                                (None, v)
                            }
                        };
                        let server_nonce = B64.encode(rand::random::<[u8; 18]>());
                        let nonce = format!("{client_nonce}{server_nonce}");
                        let server_first = format!(
                            "r={nonce},s={},i={}",
                            B64.encode(&verifier.salt),
                            verifier.iterations
                        );
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.clone().into()),
                            ))
                            .await?;
                        *state = State::ServerFirstSent(Box::new(Exchange {
                            user,
                            role,
                            verifier,
                            auth_message_prefix: format!("{bare},{server_first}"),
                            nonce,
                            gs2_header: format!("{cb},{authz},"),
                        }));
                    }
                    State::ServerFirstSent(exchange) => {
                        let Exchange {
                            user,
                            role,
                            verifier,
                            auth_message_prefix,
                            nonce,
                            gs2_header,
                        } = *exchange;
                        let resp = msg.into_sasl_response()?;
                        let text = std::str::from_utf8(&resp.data)
                            .map_err(|_| protocol("client-final is not UTF-8"))?;
                        let (without_proof, proof) = text
                            .rsplit_once(",p=")
                            .ok_or_else(|| protocol("client-final has no proof"))?;
                        if attribute(without_proof, 'c') != Some(&B64.encode(&gs2_header))
                            || attribute(without_proof, 'r') != Some(nonce.as_str())
                        {
                            return Err(protocol("client-final does not match client-first"));
                        }
                        let proof = B64
                            .decode(proof)
                            .map_err(|_| protocol("proof is not base64"))?;
                        let auth_message = format!("{auth_message_prefix},{without_proof}");
                        let signature = hmac(&verifier.stored_key, auth_message.as_bytes());
                        let client_key: Vec<u8> =
                            proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
                        let ok = proof.len() == 32
                            && constant_time_eq(&Sha256::digest(&client_key), &verifier.stored_key);
                        let (true, Some(role)) = (ok, role) else {
                            return Err(auth_failed(&user));
                        };
                        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(
                                    format!("v={}", B64.encode(server_signature)).into(),
                                ),
                            ))
                            .await?;
                        *self.login.lock().expect("not poisoned") = Some(Login { user, role });
                        finish_authentication(client, &params).await?;
                    }
                    State::Done => return Err(protocol("unexpected password message")),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil", salt and nonces below.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::with_salt("pencil", &salt, 4096);
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{bare},{server_first},{without_proof}");
        let proof = B64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let sig = hmac(&v.stored_key, auth.as_bytes());
        let key: Vec<u8> = proof.iter().zip(sig).map(|(p, s)| p ^ s).collect();
        assert_eq!(Sha256::digest(&key).as_slice(), v.stored_key);
        assert_eq!(
            B64.encode(hmac(&v.server_key, auth.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn verifier_round_trips_and_rejects_passwords() {
        let v = Verifier::create("s3cret");
        assert_eq!(Verifier::parse(&v.encode()).unwrap(), v);
        assert!(Verifier::parse("s3cret").is_err());
        assert!(Verifier::parse("SCRAM-SHA-256$100:AAAA$AAAA:AAAA").is_err());
    }

    #[test]
    fn initial_responses_with_bogus_lengths_are_errors() {
        use pgwire::messages::startup::PasswordMessageFamily as Family;
        let raw = |b: &[u8]| Family::Raw(bytes::BytesMut::from(b));
        let (m, d) = sasl_initial_response(raw(b"SCRAM-SHA-256\0\0\0\0\x03n,,")).unwrap();
        assert_eq!((m.as_str(), d.as_deref()), (MECHANISM, Some(&b"n,,"[..])));
        let (_, d) = sasl_initial_response(raw(b"SCRAM-SHA-256\0\xff\xff\xff\xff")).unwrap();
        assert_eq!(d, None);
        for bogus in [
            &b"SCRAM-SHA-256\0\x53\x43\x52\x41n,,"[..], // 1396920897: the fuzz case
            b"SCRAM-SHA-256\0\x80\0\0\0",
            b"SCRAM-SHA-256\0\0\0",
            b"SCRAM-SHA-256",
            b"",
        ] {
            let e = sasl_initial_response(raw(bogus)).unwrap_err().to_string();
            assert!(e.contains("SASLInitialResponse"), "{e}");
        }
    }
}
