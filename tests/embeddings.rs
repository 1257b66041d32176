//! The feature library end to end: `compute embeddings`, `embed`, `predict`,
//! `cosine_similarity`, `similar_series` and `medlake model add`, on the demo's CT series.
//!
//! - `embed()` computed in a query (no table yet) equals what `compute embeddings` then
//!   stores; a second run computes nothing; the series with a missing slice is a
//!   `compute_errors` row (and NULL in SQL), not an abort.
//! - `similar_series` and `cosine_similarity` are held to numpy over the table as the
//!   deltalake Python package reads it (`tests/oracle/similarity_numpy.py`).
//! - `model add`: the recorded sha256 is coreutils' `sha256sum` of the file, the file is
//!   stored in the lake, adding it again writes nothing, and bad files or outputs are
//!   refused with nothing recorded. Its outputs come back through `predict` and `embed`.

use crate::common;

use std::collections::HashMap;
use std::path::Path;

use crate::common::{display_rows, python, python_has, stdout_of};
use medlake::compute::embeddings::{compute_embeddings, EmbedOptions};
use medlake::models::{add_model, AddModel};
use medlake::phantoms::{
    phantom_series_uid, write_phantom_series, DEMO_PHANTOMS, PHANTOM_PATIENTS, PHANTOM_REPORTS,
};
use medlake::Lake;
use medlake_udfs::embedding::{builtin, Crop, Normalize, Preprocess};
use serde_json::Value;

async fn query(lake: &Lake, sql: &str) -> Vec<Vec<String>> {
    let session = medlake::open_session(lake, None).await.unwrap();
    let batches = session
        .ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    display_rows(&batches, "NULL")
}

/// The demo's CT series (with its two phantom series and all reports, if `phantoms`)
/// ingested into a new lake; returns the lake and the uid of the series with a missing
/// slice.
async fn demo_lake(root: &Path, phantoms: bool) -> (Lake, String) {
    let corpus = root.join("corpus");
    medlake::synth::write_demo_corpus(&corpus).unwrap();
    let lake = Lake::open(&root.join("lake").display().to_string()).unwrap();
    if phantoms {
        for p in DEMO_PHANTOMS {
            write_phantom_series(&corpus.join("phantoms"), &root.join("truth"), p).unwrap();
        }
    }
    common::ingest(&lake, &[&corpus], "demo").await;
    if phantoms {
        let demo = medlake::synth::write_demo_reports(&root.join("demo-reports.csv")).unwrap();
        let more = medlake::synth::write_reports(
            &root.join("phantom-reports.csv"),
            PHANTOM_PATIENTS,
            PHANTOM_REPORTS,
        )
        .unwrap();
        common::ingest_reports(&lake, &[demo.as_path(), more.as_path()], 3).await;
    }
    let broken = medlake::synth::DEMO_SERIES
        .iter()
        .find(|s| !s.missing.is_empty())
        .unwrap();
    let uid = medlake::synth::series_uid(&medlake::synth::DEMO_PATIENTS[broken.patient], broken);
    (lake, uid)
}

fn parse_vector(s: &str) -> Vec<f32> {
    s.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_table_functions_and_similarity() {
    let tmp = tempfile::tempdir().unwrap();
    let (lake, broken) = demo_lake(tmp.path(), true).await;
    let ct = query(
        &lake,
        "SELECT \"SeriesInstanceUID\" FROM series WHERE \"Modality\" IN ('CT', 'MR') \
         ORDER BY 1",
    )
    .await;
    assert!(ct.len() >= 6, "{ct:?}");

    // In a query, before any table: computed, the broken series NULL and recorded.
    let in_query: HashMap<String, String> = query(
        &lake,
        "SELECT \"SeriesInstanceUID\", embed(\"SeriesInstanceUID\") FROM series \
         WHERE \"Modality\" IN ('CT', 'MR')",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    assert_eq!(in_query[&broken], "NULL");
    // Every NULL is a series that is not one regular volume (a gap, irregular spacing).
    let failed = in_query.values().filter(|v| *v == "NULL").count() as u64;
    let errors = query(
        &lake,
        "SELECT \"SeriesInstanceUID\", error_kind, method_version FROM compute_errors ORDER BY 1",
    )
    .await;
    assert_eq!(errors.len() as u64, failed, "{errors:?}");
    assert!(errors.iter().any(|e| e[0] == broken), "{errors:?}");
    for e in &errors {
        assert_eq!(e[1], "volume", "{e:?}");
        assert!(e[2].starts_with(builtin::NAME), "{e:?}");
    }

    // The feature library: every CT/MR series accounted for; a second run does nothing.
    let opts = EmbedOptions::new(builtin::NAME);
    let first = compute_embeddings(&lake, &opts).await.unwrap();
    let n = ct.len() as u64;
    assert_eq!(first.series_selected, n);
    // The failed series are already recorded under this model, so they are not retried.
    assert_eq!(first.computed + first.already_current, n, "{first:?}");
    assert_eq!(first.computed, n - failed, "{first:?}");
    assert_eq!(first.dim, Some(builtin::DIM));
    let again = compute_embeddings(&lake, &opts).await.unwrap();
    assert_eq!((again.computed, again.already_current), (0, n), "{again:?}");
    let retried = compute_embeddings(
        &lake,
        &EmbedOptions {
            run: medlake::compute::ComputeOptions {
                retry_errors: true,
                ..Default::default()
            },
            ..opts.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (retried.computed, retried.errors),
        (0, failed),
        "{retried:?}"
    );

    // The table holds what the query computed, bit for bit (the model is deterministic).
    let stored = query(
        &lake,
        "SELECT \"SeriesInstanceUID\", vector, model, backend FROM embeddings ORDER BY 1",
    )
    .await;
    assert_eq!(stored.len() as u64, n - failed);
    for r in &stored {
        assert_eq!(
            parse_vector(&r[1]),
            parse_vector(&in_query[&r[0]]),
            "{}",
            r[0]
        );
        assert_eq!(parse_vector(&r[1]).len(), builtin::DIM);
        assert_eq!(r[2], builtin::NAME);
    }
    // embed() now reads the table: same values, and a FixedSizeList of DIM.
    let session = medlake::open_session(&lake, None).await.unwrap();
    let df = session
        .ctx
        .sql("SELECT embed(\"SeriesInstanceUID\") AS v FROM series LIMIT 1")
        .await
        .unwrap();
    match df.schema().field(0).data_type() {
        datafusion::arrow::datatypes::DataType::FixedSizeList(_, d) => {
            assert_eq!(*d as usize, builtin::DIM)
        }
        other => panic!("embed returned {other}"),
    }
    // The models table lists the built-in model once used.
    let models = query(&lake, "SELECT name, builtin, output_dim FROM models").await;
    assert_eq!(
        models,
        vec![vec![
            builtin::NAME.to_string(),
            "true".into(),
            builtin::DIM.to_string()
        ]]
    );

    // Similarity against numpy over the table as deltalake reads it.
    if !python_has("numpy, deltalake") {
        assert!(!common::in_ci(), "CI needs numpy and deltalake");
        return;
    }
    let sha = &first.model_sha256;
    let out = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/similarity_numpy.py"))
        .arg(tmp.path().join("lake/embeddings"))
        .arg(sha)
        .arg("5")
        .output()
        .unwrap();
    let oracle: Value = serde_json::from_str(&stdout_of(out, "similarity_numpy.py")).unwrap();
    assert_eq!(oracle["dim"].as_u64(), Some(builtin::DIM as u64));
    for (uid, want) in oracle["neighbours"].as_object().unwrap() {
        let got = query(
            &lake,
            &format!("SELECT rank, \"SeriesInstanceUID\", score FROM similar_series('{uid}', 5)"),
        )
        .await;
        let want = want.as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{uid}");
        for (g, w) in got.iter().zip(want) {
            let (wu, ws) = (w[0].as_str().unwrap(), w[1].as_f64().unwrap());
            let gs: f64 = g[2].parse().unwrap();
            assert!((gs - ws).abs() < 1e-5, "{uid}: {g:?} vs {w:?}");
            // Near-ties may swap order; a different series must score the same.
            if g[1] != wu {
                let other = want.iter().find(|x| x[0].as_str() == Some(&g[1]));
                assert!(other.is_some_and(|x| (x[1].as_f64().unwrap() - gs).abs() < 1e-5));
            }
        }
        assert_eq!(got[0][0], "1");
    }
    for pair in oracle["pairs"].as_array().unwrap().iter().take(20) {
        let (a, b, want) = (
            pair[0].as_str().unwrap(),
            pair[1].as_str().unwrap(),
            pair[2].as_f64().unwrap(),
        );
        let got = query(
            &lake,
            &format!(
                "SELECT cosine_similarity(x.vector, y.vector) FROM embeddings x, embeddings y \
                 WHERE x.\"SeriesInstanceUID\" = '{a}' AND y.\"SeriesInstanceUID\" = '{b}'"
            ),
        )
        .await;
        let got: f64 = got[0][0].parse().unwrap();
        assert!((got - want).abs() < 1e-6, "{a} {b}: {got} vs {want}");
    }
    // The cohort: the 5 series most like DEMO-007's phantom, with report impressions.
    let cohort = include_str!("../sql/cohorts/series_most_similar_to_a_nodule_series.sql");
    let query_uid = phantom_series_uid(&DEMO_PHANTOMS[0]);
    assert!(cohort.contains(&format!("similar_series('{query_uid}', 5)")));
    let got = query(&lake, cohort).await;
    let want = oracle["neighbours"][&query_uid].as_array().unwrap();
    let impressions: HashMap<String, String> = query(
        &lake,
        "SELECT s.\"SeriesInstanceUID\", r.impression FROM series s \
         JOIN report_links l ON l.collection = s.collection \
          AND l.\"StudyInstanceUID\" = s.\"StudyInstanceUID\" \
         JOIN reports r ON r.collection = l.collection AND r.report_id = l.report_id",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    let mut ranks: Vec<String> = got.iter().map(|r| r[0].clone()).collect();
    ranks.dedup();
    assert_eq!(ranks, ["1", "2", "3", "4", "5"], "{got:?}");
    for r in &got {
        let rank: usize = r[0].parse().unwrap();
        let (wu, ws) = (
            want[rank - 1][0].as_str().unwrap(),
            want[rank - 1][1].as_f64().unwrap(),
        );
        assert!(
            (r[3].parse::<f64>().unwrap() - ws).abs() < 1e-4,
            "{r:?} vs {wu} {ws}"
        );
        let impression = impressions.get(wu).map_or("NULL", |s| s.as_str());
        assert_eq!(r[4], impression, "{r:?}");
    }

    // A literal vector: the series' own vector finds itself first, with score 1.
    let (uid, v) = (&stored[0][0], &stored[0][1]);
    let got = query(
        &lake,
        &format!("SELECT \"SeriesInstanceUID\", score FROM similar_series({v}, 1)"),
    )
    .await;
    assert_eq!(&got[0][0], uid);
    assert!((got[0][1].parse::<f64>().unwrap() - 1.0).abs() < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_add_records_and_runs_a_model() {
    if !python_has("numpy, onnx") {
        assert!(!common::in_ci(), "CI needs numpy and onnx");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (lake, _) = demo_lake(tmp.path(), false).await;
    let file = tmp.path().join("tiny.onnx");
    let out = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/tiny_onnx_model.py"))
        .arg(&file)
        .output()
        .unwrap();
    stdout_of(out, "tiny_onnx_model.py");
    let sha = String::from_utf8(
        std::process::Command::new("sha256sum")
            .arg(&file)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split_whitespace()
    .next()
    .unwrap()
    .to_string();
    let spec = Preprocess {
        spacing_mm: Some([2.0, 2.0, 2.0]),
        window: Some([-1000.0, 400.0]),
        normalize: Normalize::Scale {
            lo: -1000.0,
            hi: 400.0,
        },
        size: Some([16, 32, 32]),
        crop: Crop::Center,
    };
    let add = AddModel {
        name: "tiny".into(),
        path: file.display().to_string(),
        preprocess: spec.clone(),
        output: None,
    };
    let (entry, wrote) = add_model(&lake, &add).await.unwrap();
    assert!(wrote);
    assert_eq!(entry.sha256, sha);
    assert_eq!(entry.output_dim, Some(4));
    // The memory plan for the fixed input: the input and the conv output (4 channels at
    // 16 x 32 x 32) are alive together at the peak, at least.
    let m = entry.memory.unwrap();
    assert_eq!(m.weight_bytes, (4 * 27 + 4) * 4);
    assert!(
        m.peak_activation_bytes >= (16 * 32 * 32 + 4 * 16 * 32 * 32) * 4,
        "{m:?}"
    );
    assert!(tmp
        .path()
        .join(format!("lake/_models/{sha}.onnx"))
        .is_file());
    let (_, wrote) = add_model(&lake, &add).await.unwrap();
    assert!(!wrote, "the same file and spec again writes nothing");
    // Refused, with nothing recorded: a bad file, an unknown output, a size the graph's
    // declared input contradicts, the built-in name.
    let junk = tmp.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let refusals = [
        AddModel {
            name: "junk".into(),
            path: junk.display().to_string(),
            ..add.clone()
        },
        AddModel {
            name: "bad-output".into(),
            output: Some("nope".into()),
            ..add.clone()
        },
        AddModel {
            name: "bad-size".into(),
            preprocess: Preprocess {
                size: Some([16, 16, 16]),
                ..spec.clone()
            },
            ..add.clone()
        },
        AddModel {
            name: builtin::NAME.into(),
            ..add.clone()
        },
    ];
    for bad in &refusals {
        let e = add_model(&lake, bad).await.unwrap_err().to_string();
        assert!(e.contains("model add"), "{e}");
    }
    let models = query(
        &lake,
        "SELECT name, sha256, output_dim FROM models ORDER BY 1",
    )
    .await;
    assert_eq!(
        models,
        vec![vec!["tiny".to_string(), sha.clone(), "4".into()]]
    );

    // The second output, a feature map, through predict; the first through embed.
    let (pooled, _) = add_model(
        &lake,
        &AddModel {
            name: "tiny-map".into(),
            output: Some("p".into()),
            ..add.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(pooled.output_dim, Some(4 * 8 * 16 * 16));
    let rows = query(
        &lake,
        "SELECT embed(\"SeriesInstanceUID\", 'tiny') AS e, \
                cardinality(predict(\"SeriesInstanceUID\", 'tiny-map')) AS n, \
                predict(\"SeriesInstanceUID\", 'tiny') AS p \
         FROM series WHERE \"Modality\" = 'CT' ORDER BY \"SeriesInstanceUID\"",
    )
    .await;
    // Series that are not one volume are NULL in all three.
    let (rows, failed): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r[0] != "NULL");
    assert!(rows.len() >= 4, "{rows:?}");
    assert!(
        failed.iter().all(|r| r[1] == "NULL" && r[2] == "NULL"),
        "{failed:?}"
    );
    for r in &rows {
        assert_eq!(parse_vector(&r[0]).len(), 4);
        assert_eq!(r[1], (4 * 8 * 16 * 16).to_string());
        assert_eq!(parse_vector(&r[0]), parse_vector(&r[2]));
        // ReLU then max and mean pooling: no negative feature.
        assert!(parse_vector(&r[0]).iter().all(|x| *x >= 0.0));
    }
    // Feature library for the registered model, keyed by its sha256.
    let s = compute_embeddings(&lake, &EmbedOptions::new("tiny"))
        .await
        .unwrap();
    assert_eq!(s.model_sha256, sha);
    let n = query(
        &lake,
        &format!("SELECT count(*) FROM embeddings WHERE model_sha256 = '{sha}' AND model = 'tiny'"),
    )
    .await;
    assert_eq!(n[0][0], s.computed.to_string());
    let e = compute_embeddings(&lake, &EmbedOptions::new("nope"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no model \"nope\""), "{e}");
}
