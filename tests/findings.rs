//! `medlake compute findings` end to end: phantom CT series written as DICOM, ingested,
//! computed into the `findings` table, and held to the phantoms' ground truth; the
//! findings cohort of sql/cohorts checked against what was placed; a series that is not
//! one volume recorded in `compute_errors`; a second run computing nothing.

use crate::common;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use medlake::compute::{compute_findings, ComputeOptions};
use medlake::phantoms::{
    phantom_series_uid, write_phantom_series, DEMO_PHANTOMS, PHANTOM_PATIENTS, PHANTOM_REPORTS,
};
use medlake::Lake;
use serde_json::Value;

async fn rows(lake: &Lake, sql: &str) -> Vec<Vec<Option<String>>> {
    let session = medlake::open_session(lake, None).await.unwrap();
    let batches = session.ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<StringArray> = b
            .columns()
            .iter()
            .map(|c| {
                let s = cast(c, &DataType::Utf8).unwrap();
                s.as_any().downcast_ref::<StringArray>().unwrap().clone()
            })
            .collect();
        for i in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| (!c.is_null(i)).then(|| c.value(i).to_string()))
                    .collect(),
            );
        }
    }
    out
}

fn num(v: &Option<String>) -> f64 {
    v.as_deref().unwrap().parse().unwrap()
}

fn dist(a: [f64; 3], b: &Value) -> f64 {
    (0..3)
        .map(|d| (a[d] - b[d].as_f64().unwrap()).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Add a series with a missing slice (not one volume, so a `compute_errors` row) to
/// `dicom`, and ingest the folder into a new lake under `root`.
async fn with_broken_series_ingested(root: &std::path::Path, dicom: &std::path::Path) -> Lake {
    let broken = &medlake::synth::DEMO_SERIES[4];
    assert!(!broken.missing.is_empty());
    for i in medlake::synth::written_slices(broken) {
        let patient = &medlake::synth::DEMO_PATIENTS[broken.patient];
        medlake::synth::write_slice(dicom, patient, broken, i).unwrap();
    }
    let lake = Lake::open(&root.join("lake").display().to_string()).unwrap();
    common::ingest(&lake, &[dicom], "demo").await;
    lake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_table_matches_phantom_truth_and_feeds_the_cohort() {
    let tmp = tempfile::tempdir().unwrap();
    let dicom = tmp.path().join("dicom");
    let truth_dir = tmp.path().join("truth");
    let mut truths = Vec::new();
    for p in DEMO_PHANTOMS {
        let (_, truth) = write_phantom_series(&dicom, &truth_dir, p).unwrap();
        let t: Value = serde_json::from_str(&std::fs::read_to_string(truth).unwrap()).unwrap();
        truths.push((phantom_series_uid(p), PHANTOM_PATIENTS[p.patient].id, t));
    }
    let lake = with_broken_series_ingested(tmp.path(), &dicom).await;
    let reports = medlake::synth::write_reports(
        &tmp.path().join("reports.csv"),
        PHANTOM_PATIENTS,
        PHANTOM_REPORTS,
    )
    .unwrap();
    common::ingest_reports(&lake, &[reports.as_path()], 3).await;

    let opts = ComputeOptions {
        device: Some("cpu".into()),
        ..Default::default()
    };
    let first = compute_findings(&lake, &opts).await.unwrap();
    assert_eq!(
        (first.series_selected, first.computed, first.errors),
        (3, 2, 1),
        "{first:?}"
    );
    assert_eq!(first.backend, "cpu");

    for (uid, patient, truth) in &truths {
        let found = rows(
            &lake,
            &format!(
                "SELECT kind, side, center_x_mm, center_y_mm, center_z_mm, diameter_mm, \
                 volume_ml, laa950_pct, nodule_type, method_version, backend \
                 FROM findings WHERE \"SeriesInstanceUID\" = '{uid}'"
            ),
        )
        .await;
        assert!(found
            .iter()
            .all(|r| r[9].as_deref() == Some(medlake_udfs::findings::METHOD_VERSION)));
        assert!(found.iter().all(|r| r[10].as_deref() == Some("cpu")));
        for (side, key) in [
            ("right", "right_lung_volume_ml"),
            ("left", "left_lung_volume_ml"),
        ] {
            let ml = found
                .iter()
                .find(|r| r[0].as_deref() == Some("lung") && r[1].as_deref() == Some(side))
                .map(|r| num(&r[6]))
                .unwrap();
            let placed = truth[key].as_f64().unwrap();
            assert!(
                (ml / placed - 1.0).abs() <= 0.02,
                "{patient} {side} lung {ml} vs {placed} ml"
            );
        }
        let laa = found
            .iter()
            .find(|r| r[0].as_deref() == Some("emphysema") && r[1].as_deref() == Some("both"))
            .map(|r| num(&r[7]))
            .unwrap();
        let placed = truth["emphysema_pct"].as_f64().unwrap();
        assert!(
            (laa - placed).abs() <= 0.5,
            "{patient} %LAA-950 {laa} vs {placed}"
        );
        let nodules: Vec<&Vec<Option<String>>> = found
            .iter()
            .filter(|r| r[0].as_deref() == Some("nodule"))
            .collect();
        for n in truth["nodules"].as_array().unwrap() {
            let d = n["diameter_mm"].as_f64().unwrap();
            if d < 4.0 {
                continue;
            }
            let hit = nodules
                .iter()
                .find(|r| {
                    dist([num(&r[2]), num(&r[3]), num(&r[4])], &n["center_lps_mm"])
                        <= (d / 2.0).max(2.0)
                })
                .unwrap_or_else(|| panic!("{patient}: nodule {n} not found"));
            assert!(
                (num(&hit[5]) - d).abs() <= 1.0,
                "{patient}: {n} measured {:?}",
                hit[5]
            );
            let solid = n["solid"].as_bool().unwrap();
            assert_eq!(
                hit[8].as_deref(),
                Some(if solid { "solid" } else { "ground-glass" })
            );
        }
    }
    let errors = rows(&lake, "SELECT error_kind, message FROM compute_errors").await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0][0].as_deref(), Some("volume"));
    assert!(
        errors[0][1].as_deref().unwrap().contains("missing slices"),
        "{errors:?}"
    );

    // The cohort: series with a nodule of 8 mm or more whose report does not affirm one.
    // DEMO-007's report says "no pulmonary nodule"; DEMO-008's names its nodules.
    let cohort = include_str!("../sql/cohorts/large_nodule_not_in_report.sql");
    let got = rows(&lake, cohort).await;
    let (_, patient, truth) = &truths[0];
    assert_eq!(*patient, "DEMO-007");
    let large: Vec<f64> = truth["nodules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["diameter_mm"].as_f64().unwrap())
        .filter(|d| *d >= 8.0)
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0][0].as_deref(), Some("DEMO-007"));
    assert_eq!(got[0][2].as_deref(), Some("RPT-0101"));
    assert_eq!(num(&got[0][3]) as usize, large.len());
    let largest = large.iter().copied().fold(0.0, f64::max);
    assert!(
        (num(&got[0][4]) - largest).abs() <= 1.0,
        "{got:?} vs {largest}"
    );

    // Again: everything is current (the failed series too), nothing is added.
    let count_sql = "SELECT count(*) FROM findings";
    let before = rows(&lake, count_sql).await;
    let second = compute_findings(&lake, &opts).await.unwrap();
    assert_eq!(
        (second.computed, second.already_current, second.errors),
        (0, 3, 0),
        "{second:?}"
    );
    assert_eq!(rows(&lake, count_sql).await, before);
}

/// `ct_findings` inside a query, on a lake where nothing is materialized: computed per
/// series, the same rows `compute findings` then writes; NULL and a `compute_errors` row
/// for a series that is not one volume; `medlake.device` checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ct_findings_computes_in_a_query_and_agrees_with_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dicom = tmp.path().join("dicom");
    // Seed 4: 61 slices of 2.5 mm, solid and ground-glass nodules.
    let series = medlake::phantoms::PhantomSeries {
        patient: 0,
        seed: 4,
        study: 3,
        study_date: "20250601",
        series_number: 7,
    };
    let (_, truth) = write_phantom_series(&dicom, &tmp.path().join("truth"), &series).unwrap();
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(truth).unwrap()).unwrap();
    let lake = with_broken_series_ingested(tmp.path(), &dicom).await;
    let uid = phantom_series_uid(&series);

    let session = medlake::open_session(&lake, None).await.unwrap();
    let bad = session.ctx.sql("SET medlake.device = 'tpu'").await;
    let bad = match bad {
        Ok(df) => df.collect().await.map(|_| ()),
        Err(e) => Err(e),
    };
    // The setting is free text; the function refuses it when it runs.
    if bad.is_ok() {
        let q = session
            .ctx
            .sql(&format!("SELECT ct_findings('{uid}')"))
            .await
            .unwrap()
            .collect()
            .await;
        assert!(q.unwrap_err().to_string().contains("cpu, gpu or auto"));
    }
    session
        .ctx
        .sql("SET medlake.device = 'cpu'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let query = "SELECT \"SeriesInstanceUID\", f['kind'], f['side'], f['diameter_mm'], \
                 f['volume_ml'], f['backend'], f['center_x_mm'], f['center_y_mm'], f['center_z_mm'] \
                 FROM (SELECT \"SeriesInstanceUID\", unnest(ct_findings(\"SeriesInstanceUID\")) AS f \
                 FROM series) ORDER BY 1, 2, 3, 4";
    let batches = session
        .ctx
        .sql(query)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let in_query = common::display_rows(&batches, "null");
    let nulls = session
        .ctx
        .sql("SELECT \"SeriesInstanceUID\", ct_findings(\"SeriesInstanceUID\") IS NULL FROM series ORDER BY 2")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let nulls = common::display_rows(&nulls, "null");
    assert_eq!(nulls.len(), 2);
    assert_eq!(nulls[0], vec![uid.clone(), "false".to_string()]);
    assert_eq!(nulls[1][1], "true");
    assert!(
        in_query.iter().all(|r| r[0] == uid && r[5] == "cpu"),
        "{in_query:?}"
    );
    // The nodules of 4 mm and more are there, measured within 1 mm.
    for n in truth["nodules"].as_array().unwrap() {
        let d = n["diameter_mm"].as_f64().unwrap();
        if d < 4.0 {
            continue;
        }
        assert!(
            in_query.iter().any(|r| r[1] == "nodule"
                && (r[3].parse::<f64>().unwrap() - d).abs() <= 1.0
                && dist(
                    [
                        r[6].parse().unwrap(),
                        r[7].parse().unwrap(),
                        r[8].parse().unwrap()
                    ],
                    &n["center_lps_mm"]
                ) <= (d / 2.0).max(2.0)),
            "{n} not in {in_query:?}"
        );
    }
    let errors = rows(&lake, "SELECT error_kind FROM compute_errors").await;
    assert_eq!(errors, vec![vec![Some("volume".to_string())]]);

    // Materialized, the table holds the same rows.
    let opts = ComputeOptions {
        device: Some("cpu".into()),
        ..Default::default()
    };
    let s = compute_findings(&lake, &opts).await.unwrap();
    assert_eq!((s.computed, s.already_current), (1, 1), "{s:?}");
    let session = medlake::open_session(&lake, None).await.unwrap();
    let table = session
        .ctx
        .sql(
            "SELECT \"SeriesInstanceUID\", kind, side, diameter_mm, volume_ml, backend, \
             center_x_mm, center_y_mm, center_z_mm FROM findings ORDER BY 1, 2, 3, 4",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(common::display_rows(&table, "null"), in_query);
}

/// A series that grows after its findings were computed is stale: the next run computes it
/// again and replaces its rows (none are left from the smaller series).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_that_grew_is_computed_again_and_its_rows_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let all = tmp.path().join("all");
    let series = medlake::phantoms::PhantomSeries {
        patient: 1,
        seed: 4,
        study: 2,
        study_date: "20250701",
        series_number: 3,
    };
    let (files, _) = write_phantom_series(&all, &tmp.path().join("truth"), &series).unwrap();
    // The first 40 slices arrive first (files are named by instance number).
    let first = tmp.path().join("first");
    for f in &files[..40] {
        let to = first.join(f.strip_prefix(&all).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(f, &to).unwrap();
    }
    let lake = Lake::open(&tmp.path().join("lake").display().to_string()).unwrap();
    common::ingest(&lake, &[first.as_path()], "demo").await;
    let opts = ComputeOptions {
        device: Some("cpu".into()),
        ..Default::default()
    };
    let s1 = compute_findings(&lake, &opts).await.unwrap();
    assert_eq!((s1.computed, s1.errors), (1, 0), "{s1:?}");
    let counts = "SELECT DISTINCT instance_count FROM findings";
    assert_eq!(
        rows(&lake, counts).await,
        vec![vec![Some("40".to_string())]]
    );

    common::ingest(&lake, &[all.as_path()], "demo").await;
    let s2 = compute_findings(&lake, &opts).await.unwrap();
    assert_eq!((s2.computed, s2.already_current), (1, 0), "{s2:?}");
    assert_eq!(
        rows(&lake, counts).await,
        vec![vec![Some(files.len().to_string())]]
    );
    // One body row: the smaller series' rows are gone.
    let bodies = rows(&lake, "SELECT count(*) FROM findings WHERE kind = 'body'").await;
    assert_eq!(bodies, vec![vec![Some("1".to_string())]]);
}
