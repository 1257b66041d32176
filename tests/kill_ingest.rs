//! Kill an ingest mid-run (SIGKILL), check the lake is still readable and consistent, then
//! run the same ingest again and check it completes with no duplicates and nothing missing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use medlake::synth::{self, SeriesSpec};

const SLICES_PER_SERIES: usize = 250;
const SERIES: usize = 12;

fn corpus(dir: &Path) -> usize {
    let specs: Vec<SeriesSpec> = (0..SERIES)
        .map(|i| SeriesSpec {
            patient: i % synth::DEMO_PATIENTS.len(),
            study: 10 + i as u32,
            study_date: "20250101",
            series_number: 1,
            description: "KILL TEST",
            body_part: "CHEST",
            slices: SLICES_PER_SERIES,
            spacing_mm: 1.0,
            thickness_mm: 1.0,
            missing: &[],
            jitter_mm: 0.0,
            nodule: None,
        })
        .collect();
    synth::write_corpus(dir, synth::DEMO_PATIENTS, &specs)
        .unwrap()
        .len()
}

fn commits(lake: &Path, table: &str) -> usize {
    std::fs::read_dir(lake.join(table).join("_delta_log"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .count()
        })
        .unwrap_or(0)
}

fn ingest_cmd(lake: &Path, corpus: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_medlake"));
    c.arg("--lake")
        .arg(lake)
        .args(["ingest", "dicom", "--batch-size", "100"])
        .arg(corpus)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

async fn counts(lake: &Path) -> (i64, i64) {
    let lake = medlake::Lake::open(&lake.display().to_string()).unwrap();
    let s = medlake::open_session(&lake, None).await.unwrap();
    let b = s
        .ctx
        .sql("SELECT count(*), count(DISTINCT SOPInstanceUID) FROM instances")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let get = |i: usize| {
        b[0].column(i)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    };
    (get(0), get(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_ingest_is_completed_by_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("corpus");
    let total = corpus(&src) as i64;
    let lake = tmp.path().join("lake");

    let mut child = ingest_cmd(&lake, &src).spawn().unwrap();
    // Kill it once some, but not all, batches are committed.
    let started = Instant::now();
    while commits(&lake, "instances") < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the ingest committed nothing in 2 minutes"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished_early = child.try_wait().unwrap().is_some();
    child.kill().ok();
    child.wait().unwrap();
    assert!(
        !finished_early,
        "the ingest finished before it could be killed; make the corpus larger"
    );

    let (partial, partial_distinct) = counts(&lake).await;
    assert!(
        partial > 0 && partial < total,
        "partial = {partial} of {total}"
    );
    assert_eq!(partial, partial_distinct, "duplicates after a kill");
    assert_eq!(partial % 100, 0, "only whole batches are committed");

    let out = ingest_cmd(&lake, &src).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files_seen"], total);
    assert_eq!(summary["duplicates"], partial);
    assert_eq!(summary["ingested"], total - partial);
    assert_eq!(summary["errors"], 0);

    let (all, distinct) = counts(&lake).await;
    assert_eq!((all, distinct), (total, total));

    // The derived tables were completed too.
    let l = medlake::Lake::open(&lake.display().to_string()).unwrap();
    let s = medlake::open_session(&l, None).await.unwrap();
    let b = s
        .ctx
        .sql("SELECT sum(instance_count), count(*) FROM series")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let formatted = datafusion::arrow::util::pretty::pretty_format_batches(&b)
        .unwrap()
        .to_string();
    assert!(
        formatted.contains(&format!("| {total} ")) && formatted.contains(&format!("| {SERIES} ")),
        "{formatted}"
    );
}
