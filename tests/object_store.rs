//! Sources and lakes behind object_store URLs.
//!
//! - `file://` sources go through object_store (listing, ranged GETs) and must give the same
//!   instances as the same folder given as a plain path.
//! - `s3://`: a lake and a source prefix on an S3 server (moto's, from PyPI, started on a
//!   free local port), driven through the `medlake` binary with the usual AWS_* variables.
//!   Needs `moto[server]` (tests/oracle/requirements.txt): skipped with a message locally
//!   when it is missing, a failure in CI.

use crate::common;

use crate::common::s3::{boto, default_cache, medlake_s3, start_moto};

use medlake::Lake;

async fn sop_uids(lake: &Lake) -> Vec<String> {
    let session = medlake::open_session(lake, None).await.unwrap();
    let batches = session
        .ctx
        .sql("SELECT SOPInstanceUID, file_uri FROM instances ORDER BY SOPInstanceUID")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let uid = medlake::lake::text_column(b.column(0)).unwrap();
        let uri = medlake::lake::text_column(b.column(1)).unwrap();
        for i in 0..b.num_rows() {
            assert!(uri.value(i).starts_with("file:///"), "{}", uri.value(i));
            out.push(uid.value(i).to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn file_urls_read_through_object_store_like_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let files = common::write_test_corpus(&corpus);
    let by_path = Lake::open(&tmp.path().join("a").display().to_string()).unwrap();
    let by_url = Lake::open(&tmp.path().join("b").display().to_string()).unwrap();
    let s1 = common::ingest(&by_path, &[&corpus], "c").await;
    let url = url::Url::from_directory_path(std::fs::canonicalize(&corpus).unwrap()).unwrap();
    let s2 = common::ingest_urls(&by_url, &[url.to_string()], "c").await;
    assert_eq!(s1.files_seen, s2.files_seen);
    assert_eq!(s1.ingested, s2.ingested);
    assert_eq!(s1.errors, s2.errors);
    assert_eq!(s1.duplicates, s2.duplicates);
    assert_eq!(sop_uids(&by_path).await, sop_uids(&by_url).await);
    // One object by its own URL.
    let one = url::Url::from_file_path(std::fs::canonicalize(&files[0]).unwrap()).unwrap();
    let by_one = Lake::open(&tmp.path().join("c").display().to_string()).unwrap();
    let s3 = common::ingest_urls(&by_one, &[one.to_string()], "c").await;
    assert_eq!((s3.files_seen, s3.ingested), (1, 1));
}

fn medlake(endpoint: &str, args: &[&str]) -> String {
    medlake_s3(endpoint, args, &default_cache())
}

#[test]
fn s3_lake_and_s3_sources() {
    let Some(moto) = start_moto() else { return };
    let endpoint = moto.endpoint.clone();

    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    common::write_test_corpus(&corpus);
    boto(
        &endpoint,
        &format!(
            "s3.create_bucket(Bucket='hospital')\n\
             root = pathlib.Path('{}')\n\
             for p in sorted(root.rglob('*')):\n\
             \x20   if p.is_file():\n\
             \x20       s3.upload_file(str(p), 'hospital', 'dicom/' + p.relative_to(root).as_posix())\n",
            corpus.display()
        ),
    );

    let lake = "s3://hospital/lake";
    let ingest = || {
        let out = medlake(
            &endpoint,
            &[
                "--lake",
                lake,
                "ingest",
                "dicom",
                "s3://hospital/dicom/",
                "--collection",
                "s3",
            ],
        );
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    let sql = |query: &str| {
        medlake(
            &endpoint,
            &["--lake", lake, "sql", "-c", query, "--format", "csv"],
        )
    };
    let summary = ingest();
    let n = |k: &str| summary[k].as_u64().unwrap();
    assert_eq!(n("files_seen"), common::DEMO_FILES + 6, "{summary}");
    assert_eq!(n("ingested"), common::DEMO_FILES);
    assert_eq!(
        n("files_seen"),
        n("ingested") + n("duplicates") + n("errors")
    );

    let csv = sql(
        "SELECT count(*) AS n, count(DISTINCT SOPInstanceUID) AS uids, \
         min(file_uri) AS first FROM instances",
    );
    let row = csv.lines().nth(1).unwrap();
    assert!(
        row.starts_with(&format!(
            "{0},{0},s3://hospital/dicom/DEMO-001/",
            common::DEMO_FILES
        )),
        "{csv}"
    );
    // The derived tables and the lake log live on S3 too.
    let csv = sql("SELECT (SELECT count(*) FROM series) AS series, \
         (SELECT max(lake_version) FROM lake_version()) AS v");
    assert_eq!(csv.lines().nth(1).unwrap(), "8,1", "{csv}");
    // Running it again adds nothing.
    let again = ingest();
    assert_eq!(again["ingested"].as_u64(), Some(0), "{again}");

    // Reports on the same lake: the table on S3, the index in this machine's cache.
    let reports = medlake::synth::write_demo_reports(&tmp.path().join("reports.csv")).unwrap();
    boto(
        &endpoint,
        &format!(
            "s3.create_bucket(Bucket='ris')\n\
             s3.upload_file('{}', 'ris', 'export/reports.csv')\n",
            reports.display()
        ),
    );
    let cache = tmp.path().join("cache-a");
    let out = medlake_s3(
        &endpoint,
        &[
            "--lake",
            lake,
            "ingest",
            "reports",
            "s3://ris/export/reports.csv",
            "--collection",
            "s3",
        ],
        &cache,
    );
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["ingested"].as_u64(), Some(7), "{summary}");
    let manifests: Vec<_> = walk_files(&cache)
        .into_iter()
        .filter(|p| p.ends_with("_search/reports/manifest.json"))
        .collect();
    assert_eq!(manifests.len(), 1, "the index lives in the local cache");
    let affirmed = "SELECT report_id FROM report_search('nodule', 'affirmed') ORDER BY report_id";
    let expected = "report_id\nRPT-0001\nRPT-0003\nRPT-0007\n";
    let found = medlake_s3(
        &endpoint,
        &["--lake", lake, "sql", "-c", affirmed, "--format", "csv"],
        &cache,
    );
    assert_eq!(found, expected);
    // Another machine (an empty cache) builds its own copy from the table on S3.
    let other = tmp.path().join("cache-b");
    let found = medlake_s3(
        &endpoint,
        &["--lake", lake, "sql", "-c", affirmed, "--format", "csv"],
        &other,
    );
    assert_eq!(found, expected);
    // The links found the studies ingested from S3.
    let links = sql("SELECT count(*) FROM report_links WHERE \"StudyInstanceUID\" IS NOT NULL");
    assert_eq!(links.lines().nth(1), Some("6"), "{links}");
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
