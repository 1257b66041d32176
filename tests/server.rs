//! `medlake serve` with real clients: psql (Debian's postgresql-client) and psycopg
//! (libpq), over a lake of two collections.
//!
//! - psql: queries, `\d`, errors, wrong passwords; TLS where openssl can make a cert.
//! - psycopg: parameters and types (dates, lists, NULLs) against the deltalake package's
//!   reading of the same table; 32 concurrent clients; a query past its memory pool.
//! - Roles: grants, column denials (also inside `dicom_json`), row policies on every table
//!   and inside every function that reads rows by another road (report_search,
//!   similar_series, ct_findings, embed, as_of, vcf_scan); no filesystem reach.
//! - The audit log records every statement, refused and failed ones included.
//!
//! The truth is the generator's (which files and series each collection got), never the
//! server's own answers.

use crate::common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medlake::synth::{series_uid, DEMO_PATIENTS, DEMO_SERIES};
use medlake::Lake;

const LUNG: &[&str] = &["DEMO-001", "DEMO-002", "DEMO-003"];
const PASSWORD: &str = "correct horse battery staple";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_medlake")
}

/// Whether `cmd` is on the PATH (it ran; OpenSSL 3 answers `--version` with an error).
fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// psql and psycopg are CI requirements; elsewhere their absence skips the test.
fn clients_present() -> bool {
    let ok = have("psql") && common::python_has("psycopg, deltalake");
    if !ok && common::in_ci() {
        panic!("psql and psycopg are needed (CI installs postgresql-client and tests/oracle/requirements.txt)");
    }
    ok
}

fn files_under(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += files_under(&p);
        } else {
            n += 1;
        }
    }
    n
}

/// The demo corpus split into collections `lung` (DEMO-001..003) and `cardiac` (the
/// rest), with each collection's reports, and embeddings of every series.
pub struct TwoCollections {
    pub root: PathBuf,
    pub lung_files: usize,
    pub cardiac_files: usize,
    pub lung_series: BTreeSet<String>,
    pub cardiac_series: BTreeSet<String>,
    /// The demo's germline VCF, ingested into `lung`, and its tumor panel, into `cardiac`
    /// (each with the demo's sample links).
    pub lung_vcf: PathBuf,
    pub cardiac_vcf: PathBuf,
}

async fn two_collections(root: &Path) -> TwoCollections {
    let corpus = root.join("corpus");
    medlake::synth::write_demo_corpus(&corpus).unwrap();
    let lake = Lake::open(&root.join("lake").display().to_string()).unwrap();
    let (mut lung, mut cardiac) = (Vec::new(), Vec::new());
    for p in DEMO_PATIENTS {
        let dir = corpus.join(p.id);
        if !dir.exists() {
            continue;
        }
        if LUNG.contains(&p.id) {
            lung.push(dir);
        } else {
            cardiac.push(dir);
        }
    }
    let count = |dirs: &[PathBuf]| dirs.iter().map(|d| files_under(d)).sum::<usize>();
    let (lung_files, cardiac_files) = (count(&lung), count(&cardiac));
    let refs = |dirs: &[PathBuf]| dirs.iter().map(PathBuf::clone).collect::<Vec<_>>();
    let lung_refs = refs(&lung);
    let cardiac_refs = refs(&cardiac);
    common::ingest(
        &lake,
        &lung_refs.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
        "lung",
    )
    .await;
    common::ingest(
        &lake,
        &cardiac_refs.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
        "cardiac",
    )
    .await;

    // Reports: the demo's, split by patient into the two collections.
    let all = medlake::synth::write_demo_reports(&root.join("reports.csv")).unwrap();
    let mut r = csv::Reader::from_path(&all).unwrap();
    let headers = r.headers().unwrap().clone();
    let mut w_lung = csv::Writer::from_path(root.join("reports-lung.csv")).unwrap();
    let mut w_cardiac = csv::Writer::from_path(root.join("reports-cardiac.csv")).unwrap();
    w_lung.write_record(&headers).unwrap();
    w_cardiac.write_record(&headers).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        if LUNG.contains(&&rec[1]) {
            w_lung.write_record(&rec).unwrap();
        } else {
            w_cardiac.write_record(&rec).unwrap();
        }
    }
    w_lung.flush().unwrap();
    w_cardiac.flush().unwrap();
    for c in ["lung", "cardiac"] {
        let opts = medlake::ingest::reports::ReportIngestOptions {
            collection: c.into(),
            progress: false,
            ..Default::default()
        };
        let f = root.join(format!("reports-{c}.csv")).display().to_string();
        medlake::ingest::reports::ingest_reports(&lake, &[f], &opts)
            .await
            .unwrap();
    }
    let opts =
        medlake::compute::embeddings::EmbedOptions::new(medlake_udfs::embedding::builtin::NAME);
    medlake::compute::embeddings::compute_embeddings(&lake, &opts)
        .await
        .unwrap();
    let (vcfs, links) = medlake::synth::write_demo_genomics(&root.join("genomics")).unwrap();
    for (vcf, c) in vcfs.iter().zip(["lung", "cardiac"]) {
        let opts = medlake::ingest::vcf::VcfIngestOptions {
            collection: c.into(),
            progress: false,
            ..Default::default()
        };
        let s = medlake::ingest::vcf::ingest_vcf(&lake, &[vcf.display().to_string()], &opts)
            .await
            .unwrap();
        assert_eq!((s.ingested, s.problems), (1, 0), "{s:?}");
        medlake::ingest::sample_links::link_samples(&lake, &links, c)
            .await
            .unwrap();
    }

    let mut lung_series = BTreeSet::new();
    let mut cardiac_series = BTreeSet::new();
    for s in DEMO_SERIES {
        let p = &DEMO_PATIENTS[s.patient];
        let uid = series_uid(p, s);
        if LUNG.contains(&p.id) {
            lung_series.insert(uid);
        } else {
            cardiac_series.insert(uid);
        }
    }
    TwoCollections {
        root: root.to_path_buf(),
        lung_files,
        cardiac_files,
        lung_series,
        cardiac_series,
        lung_vcf: vcfs[0].clone(),
        cardiac_vcf: vcfs[1].clone(),
    }
}

pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write the config and users file, and start `medlake serve` on a free port.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let config = dir.join("medlake.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
users = "users.toml"
query_memory = "64MiB"
max_connections = 64
{extra}

[roles.analyst]
tables = ["*"]
deny_columns = ["PatientName", "PatientBirthDate"]
policies = {{ "*" = "collection IN ('lung')" }}

[roles.auditor]
tables = ["audit_log"]
"#
        ),
    )
    .unwrap();
    for (user, role) in [("ada", "admin"), ("ana", "analyst"), ("aud", "auditor")] {
        let mut c = Command::new(bin())
            .args(["user", "add", "--users"])
            .arg(dir.join("users.toml"))
            .args(["--role", role, user])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(c.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        assert!(c.wait().unwrap().success());
    }
    config
}

// The child is waited for by `Server`'s Drop, or before the panic when it never starts.
#[allow(clippy::zombie_processes)]
pub fn start_server(lake: &Path, config: &Path) -> Server {
    let mut child = Command::new(bin())
        .arg("--lake")
        .arg(lake)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait();
            panic!("the server did not start ({status:?}): {line}");
        }
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            let port = addr.rsplit(':').next().unwrap().parse().unwrap();
            // Keep draining stdout so the server never blocks on it.
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = out.read_to_end(&mut sink);
            });
            return Server { child, port };
        }
    }
}

pub struct Psql {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// psql for `user` on the server, unaligned and tuples-only, stopping at the first error;
/// without TLS unless the caller sets `PGSSLMODE`.
fn psql_command(port: u16, user: &str, password: &str) -> Command {
    let mut c = Command::new("psql");
    c.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "20")
        .env("PGSSLMODE", "disable")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            "medlake",
        ])
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    c
}

pub fn psql_with(port: u16, user: &str, password: &str, extra: &[&str], sql: &str) -> Psql {
    let mut c = psql_command(port, user, password);
    c.args(extra).args(["-c", sql]);
    run_psql(c)
}

fn run_psql(mut c: Command) -> Psql {
    let out = c.output().unwrap();
    Psql {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

pub fn psql(port: u16, user: &str, sql: &str) -> String {
    let r = psql_with(port, user, PASSWORD, &[], sql);
    assert!(r.ok, "psql as {user}: {sql}: {}", r.stderr);
    r.stdout
}

fn psql_err(port: u16, user: &str, sql: &str) -> String {
    let r = psql_with(port, user, PASSWORD, &[], sql);
    assert!(
        !r.ok,
        "psql as {user}: {sql} should fail, gave {}",
        r.stdout
    );
    r.stderr
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

fn dsn(port: u16, user: &str) -> String {
    format!("host=127.0.0.1 port={port} user={user} password='{PASSWORD}' dbname=medlake sslmode=disable")
}

fn pg_client(args: &[&str]) -> serde_json::Value {
    let out = Command::new(common::python())
        .arg("tests/oracle/pg_clients.py")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_clients.py {}: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_psycopg_roles_policies_and_audit() {
    if !clients_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = two_collections(tmp.path()).await;
    let lake_dir = t.root.join("lake");
    let config = write_config(tmp.path(), "");
    let server = start_server(&lake_dir, &config);
    let port = server.port;
    let total = t.lung_files + t.cardiac_files;
    assert!(t.lung_files > 0 && t.cardiac_files > 0);

    // Authentication.
    let bad = psql_with(port, "ana", "wrong", &[], "SELECT 1");
    assert!(
        !bad.ok && bad.stderr.contains("password authentication failed"),
        "{}",
        bad.stderr
    );
    let unknown = psql_with(port, "nobody", PASSWORD, &[], "SELECT 1");
    assert!(!unknown.ok && unknown.stderr.contains("password authentication failed"));

    // Rows: the admin sees both collections, the analyst only `lung`.
    assert_eq!(
        psql(port, "ada", "SELECT count(*) FROM instances"),
        total.to_string()
    );
    assert_eq!(
        psql(port, "ana", "SELECT count(*) FROM instances"),
        t.lung_files.to_string()
    );
    assert_eq!(
        psql(port, "ana", "SELECT DISTINCT collection FROM instances UNION SELECT DISTINCT collection FROM series UNION SELECT DISTINCT collection FROM reports UNION SELECT DISTINCT collection FROM embeddings"),
        "lung"
    );
    let series: BTreeSet<String> = lines(&psql(
        port,
        "ana",
        "SELECT \"SeriesInstanceUID\" FROM series",
    ))
    .into_iter()
    .collect();
    assert_eq!(series, t.lung_series);
    let all_series: BTreeSet<String> = lines(&psql(
        port,
        "ada",
        "SELECT \"SeriesInstanceUID\" FROM series",
    ))
    .into_iter()
    .collect();
    assert_eq!(
        all_series,
        t.lung_series.union(&t.cardiac_series).cloned().collect()
    );

    // Columns: denied ones are absent, also inside dicom_json.
    let d = psql_with(port, "ana", PASSWORD, &[], "\\d instances");
    assert!(d.ok, "{}", d.stderr);
    assert!(
        d.stdout.contains("PatientID")
            && !d.stdout.contains("PatientName")
            && !d.stdout.contains("PatientBirthDate"),
        "{}",
        d.stdout
    );
    // The catalog queries a JDBC client (DBeaver) sends on connecting: the database it
    // names is there, with the role's tables and their columns.
    assert_eq!(psql(port, "ana", "SELECT current_database()"), "medlake");
    assert_eq!(
        psql(
            port,
            "ana",
            "SELECT count(*) FROM pg_catalog.pg_database db WHERE datname = 'medlake'"
        ),
        "1"
    );
    let relations = lines(&psql(
        port,
        "ana",
        "SELECT c.relname FROM pg_catalog.pg_class c LEFT OUTER JOIN pg_catalog.pg_description d \
         ON d.objoid = c.oid AND d.objsubid = 0 AND d.classoid = 'pg_class'::regclass \
         WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public') \
         AND c.relkind NOT IN ('i', 'I', 'c') ORDER BY 1",
    ));
    assert!(
        relations.iter().any(|r| r == "series") && !relations.iter().any(|r| r == "audit_log"),
        "{relations:?}"
    );
    let columns = lines(&psql(
        port,
        "ana",
        "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON a.attrelid = c.oid \
         LEFT OUTER JOIN pg_catalog.pg_attrdef ad ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum \
         WHERE NOT a.attisdropped AND c.relname = 'instances' ORDER BY a.attnum",
    ));
    assert!(
        columns.iter().any(|c| c == "PatientID") && !columns.iter().any(|c| c == "PatientName"),
        "{columns:?}"
    );
    let tables = psql(port, "ana", "\\dt");
    assert!(
        tables.contains("instances") && tables.contains("reports") && !tables.contains("audit_log"),
        "{tables}"
    );
    let e = psql_err(port, "ana", "SELECT \"PatientName\" FROM instances");
    assert!(e.contains("PatientName"), "{e}");
    assert_eq!(
        psql(port, "ana", "SELECT count(*) FROM instances WHERE dicom_tag(dicom_json, 'PatientName') IS NOT NULL OR dicom_tag(dicom_json, 'PatientBirthDate') IS NOT NULL"),
        "0"
    );
    assert_eq!(
        psql(
            port,
            "ada",
            "SELECT count(*) FROM instances WHERE dicom_tag(dicom_json, 'PatientName') IS NOT NULL"
        ),
        total.to_string()
    );
    assert_eq!(
        psql(
            port,
            "ana",
            "SELECT count(*) FROM instances WHERE dicom_tag(dicom_json, 'PatientID') IS NOT NULL"
        ),
        t.lung_files.to_string()
    );

    // report_search: the analyst's hits are the admin's hits in `lung`, and the admin has
    // hits elsewhere too (so the check can fail).
    let q = "SELECT collection || '/' || report_id FROM report_search('nodule OR chest OR normal') ORDER BY 1";
    let mine: Vec<String> = lines(&psql(port, "ana", q));
    let admin: Vec<String> = lines(&psql(port, "ada", q));
    assert!(admin.iter().any(|r| r.starts_with("cardiac/")), "{admin:?}");
    assert!(!mine.is_empty());
    assert_eq!(
        mine,
        admin
            .iter()
            .filter(|r| r.starts_with("lung/"))
            .cloned()
            .collect::<Vec<_>>()
    );

    // similar_series: only visible series are searched, k of them when there are k; a
    // hidden query series is answered as if it had no embedding.
    // A series of each collection that has a stored vector (per the admin's view).
    let with_vector = |c: &str| {
        psql(port, "ada", &format!("SELECT \"SeriesInstanceUID\" FROM embeddings WHERE collection = '{c}' ORDER BY 1 LIMIT 1"))
    };
    let (lung_uid, cardiac_uid) = (&with_vector("lung"), &with_vector("cardiac"));
    assert!(t.lung_series.contains(lung_uid) && t.cardiac_series.contains(cardiac_uid));
    let n = t.lung_series.len() + t.cardiac_series.len();
    let q = format!("SELECT collection FROM similar_series('{lung_uid}', {n})");
    let mine = lines(&psql(port, "ana", &q));
    let admin = lines(&psql(port, "ada", &q));
    assert!(admin.iter().any(|c| c == "cardiac"), "{admin:?}");
    assert!(mine.iter().all(|c| c == "lung"), "{mine:?}");
    assert_eq!(mine.len(), admin.iter().filter(|c| *c == "lung").count());
    let e = psql_err(
        port,
        "ana",
        &format!("SELECT * FROM similar_series('{cardiac_uid}', 3)"),
    );
    assert!(e.contains("has no embedding"), "{e}");

    // Functions that read a series by UID answer NULL for a hidden one.
    assert_eq!(
        psql(
            port,
            "ana",
            &format!("SELECT embed('{cardiac_uid}') IS NULL, embed('{lung_uid}') IS NULL")
        ),
        "t|f"
    );
    assert_eq!(
        psql(
            port,
            "ada",
            &format!("SELECT embed('{cardiac_uid}') IS NULL")
        ),
        "f"
    );
    let model = medlake_udfs::embedding::builtin::NAME;
    for (user, want) in [("ana", "t|f"), ("ada", "f|f")] {
        assert_eq!(
            psql(
                port,
                user,
                &format!(
                    "SELECT predict('{cardiac_uid}', '{model}') IS NULL, \
                     predict('{lung_uid}', '{model}') IS NULL"
                )
            ),
            want,
            "{user}"
        );
    }
    assert_eq!(
        psql(
            port,
            "ana",
            &format!("SELECT ct_findings('{cardiac_uid}') IS NULL")
        ),
        "t"
    );

    // as_of: the same policy on an older version (lake version 2 holds both collections).
    assert_eq!(
        psql(port, "ana", "SELECT count(*) FROM as_of('instances', 2)"),
        t.lung_files.to_string()
    );
    assert_eq!(
        psql(port, "ada", "SELECT count(*) FROM as_of('instances', 2)"),
        total.to_string()
    );
    let e = psql_err(port, "ana", "SELECT count(*) FROM as_of('audit_log', 2)");
    assert!(e.contains("permission denied"), "{e}");

    // Genomics: every table's rows are the role's collections', and vcf_scan reads a file
    // only where the role sees it ingested, with the variants policy applied.
    let genomics = [
        "variants",
        "genotypes",
        "variant_effects",
        "samples",
        "vcf_files",
        "sample_links",
    ];
    for (user, want) in [("ana", "lung"), ("ada", "cardiac\nlung")] {
        let q = genomics
            .map(|t| format!("SELECT DISTINCT collection FROM {t}"))
            .join(" UNION ");
        assert_eq!(psql(port, user, &format!("{q} ORDER BY 1")), want, "{user}");
    }
    for (vcf, c) in [(&t.lung_vcf, "lung"), (&t.cardiac_vcf, "cardiac")] {
        let in_lake = psql(
            port,
            "ada",
            &format!("SELECT count(*) FROM variants WHERE collection = '{c}'"),
        );
        assert_ne!(in_lake, "0");
        let scan = format!("SELECT count(*) FROM vcf_scan('{}')", vcf.display());
        assert_eq!(psql(port, "ada", &scan), in_lake, "{c}");
        if c == "lung" {
            assert_eq!(psql(port, "ana", &scan), in_lake);
        } else {
            let e = psql_err(port, "ana", &scan);
            assert!(e.contains("permission denied"), "{e}");
        }
    }

    // No filesystem reach.
    let outside = tmp.path().join("copied.csv");
    for sql in [
        format!("COPY (SELECT 1) TO '{}'", outside.display()),
        "SELECT * FROM vcf_scan('/etc/passwd')".to_string(),
        "CREATE TABLE t AS SELECT 1".to_string(),
        "SET datafusion.runtime.memory_limit = '100G'".to_string(),
    ] {
        let e = psql_err(port, "ana", &sql);
        assert!(e.contains("permission denied"), "{sql}: {e}");
    }
    // datafusion-postgres' parser does not take DataFusion's CREATE EXTERNAL TABLE at
    // all (for no role); refused either way.
    let e = psql_err(
        port,
        "ana",
        "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
    );
    assert!(
        e.contains("permission denied") || e.contains("parser error"),
        "{e}"
    );
    let e = psql_err(port, "ana", "SELECT * FROM 's3://bucket/key.parquet'");
    assert!(e.contains("ERROR"), "{e}");
    let e = psql_err(port, "ana", "SELECT * FROM '/etc/passwd'");
    assert!(e.contains("ERROR"), "{e}");
    assert!(!outside.exists());
    // The admin may run what the analyst may not.
    assert_eq!(
        psql(
            port,
            "ada",
            "CREATE TABLE scratch AS SELECT 41 + 1 AS v; SELECT v FROM scratch"
        ),
        "42"
    );

    // Errors come back as errors, and the connection's next statement works.
    let e = psql_err(port, "ana", "SELECT nosuchcolumn FROM instances");
    assert!(e.contains("ERROR") && e.contains("nosuchcolumn"), "{e}");

    // psycopg: parameters and types against deltalake's reading of the table.
    let lake_s = lake_dir.display().to_string();
    let v = pg_client(&["types", &dsn(port, "ana"), &lake_s, "lung"]);
    assert!(v["rows"].as_u64().unwrap() > 0, "{v}");
    let e = Command::new(common::python())
        .arg("tests/oracle/pg_clients.py")
        .args(["types", &dsn(port, "ana"), &lake_s, "cardiac"])
        .output()
        .unwrap();
    assert!(!e.status.success(), "the analyst must not get cardiac rows");

    // 32 concurrent clients, mixed queries, bounded memory.
    let pid = server.child.id();
    let before = rss_kib(pid, "VmRSS:");
    let v = pg_client(&["concurrent", &dsn(port, "ana"), "32", "12", &lake_s, "lung"]);
    assert_eq!(v["errors"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["queries"].as_u64().unwrap(), 32 * 12);
    let peak = rss_kib(pid, "VmHWM:");
    eprintln!("server RSS before {before} KiB, peak {peak} KiB");
    assert!(peak < 2 * 1024 * 1024, "peak RSS {peak} KiB");

    // A query past `query_memory` (64 MiB: 20M unordered groups) fails cleanly, naming
    // the pool; the same connection then runs the next query.
    let v = pg_client(&["memory", &dsn(port, "ana")]);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("Resources exhausted"), "{msg}");
    let after = rss_kib(pid, "VmHWM:");
    assert!(after < 2 * 1024 * 1024, "peak RSS {after} KiB");
    // The audit log: only roles that name it read it; every statement is there.
    let e = psql_err(port, "ana", "SELECT * FROM audit_log");
    assert!(e.contains("audit_log"), "{e}");
    let rows = psql(
        port,
        "aud",
        "SELECT status || '|' || coalesce(CAST(rows_returned AS VARCHAR), '') FROM audit_log \
         WHERE event = 'end' AND \"user\" = 'ana' AND sql = 'SELECT count(*) FROM instances'",
    );
    assert!(lines(&rows).iter().any(|r| r == "ok|1"), "{rows}");
    let refused = psql(port, "aud", "SELECT count(*) FROM audit_log WHERE event = 'end' AND status = 'refused' AND \"user\" = 'ana'");
    // COPY, CREATE TABLE and SET datafusion.runtime are refused before planning;
    // vcf_scan('/etc/passwd') and of the cardiac VCF fail in planning (`error` rows naming
    // the denial).
    assert_eq!(refused, "3");
    let denied = psql(port, "aud", "SELECT count(*) FROM audit_log WHERE event = 'end' AND status = 'error' AND error LIKE '%permission denied%vcf_scan%'");
    assert_eq!(denied, "2");
    let failed = psql(
        port,
        "aud",
        "SELECT count(*) FROM audit_log WHERE status = 'error' AND sql LIKE '%nosuchcolumn%'",
    );
    assert_eq!(failed, "1");
    let starts = psql(
        port,
        "aud",
        "SELECT count(*) FROM audit_log WHERE event = 'start'",
    );
    let ends = psql(
        port,
        "aud",
        "SELECT count(*) FROM audit_log WHERE event = 'end'",
    );
    // Every statement but the auditor's own last two has both rows.
    assert!(
        starts.parse::<i64>().unwrap() - ends.parse::<i64>().unwrap() <= 2,
        "{starts} {ends}"
    );
    let rows = psql(
        port,
        "aud",
        "SELECT count(DISTINCT \"user\") FROM audit_log",
    );
    assert_eq!(rows, "3");
    let e = psql_err(port, "aud", "SELECT count(*) FROM instances");
    assert!(e.contains("instances"), "{e}");
}

/// Send bytes on a fresh connection, close our side, and wait for the server to end the
/// connection: a server that is still holding it 15 s later has hung on the input.
fn poke(port: u16, payload: &[u8]) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(payload);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            // Error responses may come first.
            Ok(_) => continue,
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "the server kept a connection open 15 s after bad input {payload:?}"
                );
                return;
            }
        }
    }
}

fn startup(user: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes());
    for (k, v) in [("user", user), ("database", "medlake")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    m
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_protocol_input_and_a_killed_server() {
    if !clients_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    medlake::synth::write_demo_corpus(&corpus).unwrap();
    let lake_dir = tmp.path().join("lake");
    let lake = Lake::open(&lake_dir.display().to_string()).unwrap();
    common::ingest(&lake, &[corpus.join("DEMO-001").as_path()], "base").await;
    let config = write_config(tmp.path(), "");
    let mut server = start_server(&lake_dir, &config);
    let port = server.port;
    let base = files_under(&corpus.join("DEMO-001"));
    assert_eq!(psql(port, "ana", "SELECT 1"), "1");

    // Bad protocol input: each bad connection is dropped, the server keeps serving.
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut cases: Vec<Vec<u8>> = vec![
        0x7fff_ffffu32
            .to_be_bytes()
            .iter()
            .chain(&196608u32.to_be_bytes())
            .copied()
            .collect(),
        [0u8, 0, 0, 8, 0x12, 0x34, 0x56, 0x78].to_vec(),
        [0u8, 0, 0, 4].to_vec(),
        [0u8, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]
            .iter()
            .chain(b"garbage!")
            .copied()
            .collect(),
    ];
    // A valid startup, then an oversized message (1 GiB declared) and other bad frames.
    for tail in [
        b"p\x40\x00\x00\x00".to_vec(),
        b"Q\x7f\xff\xff\xffSELECT 1".to_vec(),
        b"p\x00\x00\x00\x10SCRAM-SHA-256\x00".to_vec(),
        b"p\x00\x00\x00\x20SCRAM-SHA-256\x00\xff\xff\xff\xffn,,n=".to_vec(),
        b"X\x00\x00\x00\x04".to_vec(),
    ] {
        let mut m = startup("ana");
        m.extend_from_slice(&tail);
        cases.push(m);
    }
    for _ in 0..150 {
        let len = (rng.next() % 300) as usize + 1;
        let mut m: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.next().is_multiple_of(2) {
            // Mutations of a valid startup reach past the length check.
            let mut s = startup("ana");
            for _ in 0..(1 + rng.next() % 4) {
                let at = (rng.next() as usize) % s.len();
                s[at] = rng.next() as u8;
            }
            m = s;
        }
        cases.push(m);
    }
    let pid = server.child.id();
    for c in &cases {
        poke(port, c);
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "the server died on {c:?}"
        );
    }
    assert_eq!(psql(port, "ana", "SELECT count(*) FROM instances"), "0");
    assert_eq!(
        psql(port, "ada", "SELECT count(*) FROM instances"),
        base.to_string()
    );
    let peak = rss_kib(pid, "VmHWM:");
    assert!(peak < 1024 * 1024, "peak RSS {peak} KiB after bad input");

    // Kill the server (and the ingest running beside it) in the middle of a stream of
    // ingests and queries.
    let batches: Vec<(String, PathBuf)> = DEMO_PATIENTS[1..]
        .iter()
        .filter(|p| corpus.join(p.id).exists())
        .map(|p| (format!("extra-{}", p.id), corpus.join(p.id)))
        .collect();
    assert!(batches.len() >= 3);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let acked_ingests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ingests = {
        let (stop, running, acked) = (stop.clone(), running.clone(), acked_ingests.clone());
        let lake_dir = lake_dir.clone();
        let batches = batches.clone();
        std::thread::spawn(move || {
            for (collection, dir) in batches {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let mut c = Command::new(bin())
                    .arg("--lake")
                    .arg(&lake_dir)
                    .args([
                        "ingest",
                        "dicom",
                        "--batch-size",
                        "16",
                        "--collection",
                        &collection,
                    ])
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                running.store(c.id(), std::sync::atomic::Ordering::SeqCst);
                let ok = c.wait().unwrap().success();
                running.store(0, std::sync::atomic::Ordering::SeqCst);
                if ok {
                    acked.lock().unwrap().push(collection);
                }
            }
        })
    };
    let acked_queries = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let queries = {
        let acked = acked_queries.clone();
        std::thread::spawn(move || {
            for k in 0.. {
                let r = psql_with(
                    port,
                    "ada",
                    PASSWORD,
                    &[],
                    &format!("SELECT 'marker-{k}' AS m, count(*) FROM instances"),
                );
                if !r.ok {
                    break;
                }
                acked.lock().unwrap().push(k);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline
        && (acked_ingests.lock().unwrap().is_empty() || acked_queries.lock().unwrap().len() < 5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Wait for an ingest to be under way, then kill both.
    while Instant::now() < deadline && running.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let ingest_pid = running.load(std::sync::atomic::Ordering::SeqCst);
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    if ingest_pid != 0 {
        let _ = Command::new("kill")
            .args(["-9", &ingest_pid.to_string()])
            .status();
    }
    queries.join().unwrap();
    ingests.join().unwrap();
    let acked_ingests = acked_ingests.lock().unwrap().clone();
    let acked_queries = acked_queries.lock().unwrap().clone();
    assert!(!acked_ingests.is_empty() && acked_queries.len() >= 5);

    let server = start_server(&lake_dir, &config);
    let port = server.port;
    // Every acknowledged ingest is there, whole; nothing is there twice.
    for (collection, dir) in &batches {
        if acked_ingests.contains(collection) {
            let n = psql(
                port,
                "ada",
                &format!("SELECT count(*) FROM instances WHERE collection = '{collection}'"),
            );
            assert_eq!(n, files_under(dir).to_string(), "{collection}");
        }
    }
    assert_eq!(
        psql(
            port,
            "ada",
            "SELECT count(*) - count(DISTINCT \"SOPInstanceUID\") FROM instances"
        ),
        "0"
    );
    // Every acknowledged query is in the audit log, with its row count.
    let logged: BTreeSet<String> = lines(&psql(
        port,
        "aud",
        "SELECT sql FROM audit_log WHERE event = 'end' AND status = 'ok' AND rows_returned = 1 AND sql LIKE '%marker-%'",
    ))
    .into_iter()
    .collect();
    for k in &acked_queries {
        let needle = format!("'marker-{k}'");
        assert!(
            logged.iter().any(|s| s.contains(&needle)),
            "query {k} acknowledged but not audited"
        );
    }
    // Running the ingests again completes them, without duplicates.
    for (collection, dir) in &batches {
        let st = Command::new(bin())
            .arg("--lake")
            .arg(&lake_dir)
            .args(["ingest", "dicom", "--collection", collection])
            .arg(dir)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let n = psql(
            port,
            "ada",
            &format!("SELECT count(*) FROM instances WHERE collection = '{collection}'"),
        );
        assert_eq!(
            n,
            files_under(dir).to_string(),
            "{collection} after the re-run"
        );
    }
    assert_eq!(
        psql(
            port,
            "ada",
            "SELECT count(*) - count(DISTINCT \"SOPInstanceUID\") FROM instances"
        ),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_when_configured() {
    if !clients_present() {
        return;
    }
    if !have("openssl") {
        assert!(
            !common::in_ci(),
            "CI needs openssl to make a test certificate"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("server.crt"), tmp.path().join("server.key"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let lake_dir = tmp.path().join("lake");
    Lake::open(&lake_dir.display().to_string()).unwrap();
    let config = write_config(
        tmp.path(),
        "tls_cert = \"server.crt\"\ntls_key = \"server.key\"",
    );
    let server = start_server(&lake_dir, &config);
    let mut c = psql_command(server.port, "ana", PASSWORD);
    c.env("PGSSLMODE", "require").args(["-c", "SELECT 40 + 2"]);
    let tls = run_psql(c);
    assert!(tls.ok, "{}", tls.stderr);
    assert_eq!(tls.stdout, "42");
    // The certificate is the one configured: verifying against it succeeds.
    let mut c = psql_command(server.port, "ana", PASSWORD);
    c.env("PGSSLMODE", "verify-ca")
        .env("PGSSLROOTCERT", &cert)
        .args(["-c", "SELECT 1"]);
    let verified = run_psql(c);
    assert!(verified.ok, "{}", verified.stderr);
    assert_eq!(verified.stdout, "1");
}
