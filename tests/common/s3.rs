//! An S3 server for tests (moto, from tests/oracle/requirements.txt), and medlake and boto3
//! run against it.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{in_ci, python, python_has, stdout_of};

/// moto's S3 server, stopped when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start moto on a free port; `None` (a skip) where moto is not installed, which CI
/// does not allow.
pub fn start_moto() -> Option<Moto> {
    if !python_has("moto.server, boto3") {
        assert!(
            !in_ci(),
            "CI=true but python cannot import moto.server (tests/oracle/requirements.txt)"
        );
        eprintln!("skipping: moto[server] is not installed (tests/oracle/requirements.txt)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python())
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "moto did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Some(server)
}

/// Run a Python snippet with `s3`, a boto3 client of the server (and `pathlib`, `sys`);
/// its standard output.
pub fn boto(endpoint: &str, code: &str) -> String {
    let script = format!(
        "import boto3, pathlib, sys\n\
         s3 = boto3.client('s3', endpoint_url='{endpoint}', region_name='us-east-1',\n\
             aws_access_key_id='testing', aws_secret_access_key='testing')\n{code}"
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    stdout_of(out, "boto3")
}

/// Run medlake against the server, with its local cache (where a remote lake's report
/// index lives) at `cache`, and no `MEDLAKE_DEID_SECRET` (the lake's own secret is used).
pub fn medlake_s3(endpoint: &str, args: &[&str], cache: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_medlake"))
        .args(args)
        .env_remove("MEDLAKE_DEID_SECRET")
        .env("MEDLAKE_CACHE_DIR", cache)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap();
    stdout_of(out, &format!("medlake {args:?}"))
}

/// The shared cache folder that most S3 tests use.
pub fn default_cache() -> std::path::PathBuf {
    std::env::temp_dir().join("medlake-test-cache")
}
