//! Ingest accounting and idempotency, and other engines reading the lake.

use crate::common;

use std::process::Command;

async fn query_rows(lake: &medlake::Lake, sql: &str) -> Vec<Vec<String>> {
    let s = medlake::open_session(lake, None).await.unwrap();
    let batches = s.ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(i) {
                            String::new()
                        } else {
                            datafusion::arrow::util::display::array_value_to_string(c, i).unwrap()
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn reingest_adds_nothing_and_counts_add_up() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = common::build_test_lake(tmp.path()).await;
    let corpus = tmp.path().join("corpus");
    let again = common::ingest(&lake, &[&corpus], "demo").await;
    assert_eq!(again.files_seen, common::DEMO_FILES + 6);
    assert_eq!(again.ingested, 0);
    // 211 instances plus the byte-identical copy.
    assert_eq!(again.duplicates, common::DEMO_FILES + 1);
    assert_eq!(again.errors, 5);
    // The test lake's newest version is 6 (two DICOM ingests, two report ingests, a VCF
    // ingest and sample links).
    assert_eq!(
        again.lake_version, 6,
        "nothing changed, so no new lake version"
    );
    let n = query_rows(&lake, "SELECT count(*) FROM ingest_errors").await;
    assert_eq!(n, vec![vec!["5".to_string()]]);
    let n = query_rows(&lake, "SELECT count(*) FROM instances").await;
    assert_eq!(n, vec![vec![common::DEMO_FILES.to_string()]]);
}

/// Other engines read the lake: the `deltalake` Python package gets the same rows.
#[tokio::test(flavor = "multi_thread")]
async fn python_deltalake_reads_the_same_rows() {
    if !common::python_has("deltalake") {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the deltalake Python package is missing in CI");
        }
        eprintln!("SKIP: python3 -m pip install -r tests/oracle/requirements.txt");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lake = common::build_test_lake(tmp.path()).await;
    let root = lake.local_root().unwrap();
    for (table, cols) in [
        (
            "series",
            "SeriesInstanceUID,PatientID,instance_count,slice_spacing_mm",
        ),
        ("instances", "SOPInstanceUID,file_uri,Rows,InstanceNumber"),
    ] {
        let out = Command::new(common::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/oracle/read_delta.py"
            ))
            .arg(root.join(table))
            .arg(cols)
            .output()
            .unwrap();
        let text = common::stdout_of(out, "read_delta.py");
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), cols);
        let theirs: Vec<Vec<String>> = lines
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect();
        let mut ours = query_rows(
            &lake,
            &format!("SELECT {cols} FROM {table} ORDER BY {cols}"),
        )
        .await;
        ours.sort();
        let mut theirs = theirs;
        theirs.sort();
        assert_eq!(ours.len(), theirs.len(), "{table}: row count");
        for (a, b) in ours.iter().zip(&theirs) {
            for (x, y) in a.iter().zip(b) {
                let equal = x == y
                    || matches!((x.parse::<f64>(), y.parse::<f64>()), (Ok(p), Ok(q)) if p == q);
                assert!(equal, "{table}: medlake {a:?} vs deltalake {b:?}");
            }
        }
    }
}
