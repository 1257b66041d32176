//! Lakes that the integration tests build, from synthetic series with known ground truth.

pub mod s3;

use std::path::{Path, PathBuf};

use medlake::ingest::dicom::{ingest_dicom, DicomIngestOptions};
use medlake::ingest::IngestSummary;
use medlake::synth;
use medlake::Lake;

/// The demo corpus plus a folder of problem files:
/// - `not_dicom.txt` and `empty.dcm`: not DICOM;
/// - `truncated.dcm`: the first 400 bytes of a real slice: its header is cut short, so the
///   elements before the cut are kept; it shares the slice's SOPInstanceUID, so it is a
///   conflicting instance;
/// - `bogus_length.dcm`: a file meta group, then a first element claiming 4 GiB: nothing
///   of the data set can be read, an error (`truncated`), and no 4 GiB allocation;
/// - `copy.dcm`: a byte-identical copy of an instance (a duplicate);
/// - `conflict.dcm`: an instance of DEMO-003 with the same SOPInstanceUID but another
///   PatientWeight (a conflicting instance).
pub fn write_test_corpus(dir: &Path) -> Vec<PathBuf> {
    let mut files = synth::write_demo_corpus(dir).expect("demo corpus");
    let broken = dir.join("zz-broken");
    std::fs::create_dir_all(&broken).unwrap();
    let first = &files[0];
    let bytes = std::fs::read(first).unwrap();
    let put = |name: &str, data: &[u8]| {
        let p = broken.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let mut extra = vec![
        put("not_dicom.txt", b"hello, this is not DICOM\n"),
        put("empty.dcm", b""),
        put("truncated.dcm", &bytes[..400]),
        put("bogus_length.dcm", &bogus_length(&bytes)),
        put("copy.dcm", &std::fs::read(&files[60]).unwrap()),
    ];
    // Same instance as DEMO-003's first slice, different content.
    let p = synth::PatientSpec {
        birth_date: "19540121",
        ..synth::DEMO_PATIENTS[2].clone()
    };
    let s = &synth::DEMO_SERIES[3];
    let tmp = dir.join("zz-tmp");
    let written = synth::write_slice(&tmp, &p, s, 0).unwrap();
    let conflict = broken.join("conflict.dcm");
    std::fs::rename(&written, &conflict).unwrap();
    std::fs::remove_dir_all(&tmp).unwrap();
    extra.push(conflict);
    files.extend(extra);
    files
}

/// The file meta group of `slice`, then an element (0008,0005) of VR UT claiming
/// 0xFFFFFFF0 bytes, then a few bytes.
pub fn bogus_length(slice: &[u8]) -> Vec<u8> {
    let meta_len = u32::from_le_bytes(slice[140..144].try_into().unwrap()) as usize;
    let mut out = slice[..144 + meta_len].to_vec();
    out.extend_from_slice(&[0x08, 0x00, 0x05, 0x00, b'U', b'T', 0, 0]);
    out.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    out.extend_from_slice(b"ISO_IR 100");
    out
}

pub const DEMO_FILES: u64 = 211;

/// Whether this is CI (`CI=true`), where a missing oracle fails a test instead of
/// skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The Python that runs the reference oracles (`PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A finished command's standard output, after asserting that it succeeded (`what` and its
/// standard error name it otherwise).
pub fn stdout_of(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether that Python can import all of these modules.
pub fn python_has(modules: &str) -> bool {
    std::process::Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub async fn ingest(lake: &Lake, inputs: &[&Path], collection: &str) -> IngestSummary {
    let opts = DicomIngestOptions {
        collection: collection.to_string(),
        progress: false,
        batch_size: 64,
        deidentify: None,
    };
    let inputs: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    ingest_dicom(lake, &inputs, &opts).await.expect("ingest")
}

/// Ingest from URLs (file://, s3://...).
pub async fn ingest_urls(lake: &Lake, inputs: &[String], collection: &str) -> IngestSummary {
    let opts = DicomIngestOptions {
        collection: collection.to_string(),
        progress: false,
        batch_size: 64,
        deidentify: None,
    };
    ingest_dicom(lake, inputs, &opts).await.expect("ingest")
}

/// The lake the .slt files run against: lake version 1 holds DEMO-001..003, lake version 2
/// everything in [`write_test_corpus`].
pub async fn build_test_lake(root: &Path) -> Lake {
    let corpus = root.join("corpus");
    write_test_corpus(&corpus);
    let lake = Lake::open(&root.join("lake").display().to_string()).unwrap();
    let first: Vec<PathBuf> = ["DEMO-001", "DEMO-002", "DEMO-003"]
        .iter()
        .map(|p| corpus.join(p))
        .collect();
    let first: Vec<&Path> = first.iter().map(|p| p.as_path()).collect();
    let s1 = ingest(&lake, &first, "demo").await;
    assert_eq!(s1.ingested, 128);
    assert_eq!(s1.lake_version, 1);
    let s2 = ingest(&lake, &[&corpus], "demo").await;
    assert_eq!(s2.lake_version, 2);
    // Lake version 3: the demo reports; 4: one report whose only link is by patient and a
    // 400-day window that holds both of DEMO-006's studies (ambiguous).
    let reports = medlake::synth::write_demo_reports(&root.join("reports.csv")).unwrap();
    let r3 = ingest_reports(&lake, &[reports.as_path()], 3).await;
    assert_eq!(r3.lake_version, 3);
    let ambiguous = root.join("ambiguous.jsonl");
    std::fs::write(
        &ambiguous,
        "{\"report_id\": \"RPT-0100\", \"PatientID\": \"DEMO-006\", \"report_date\": \"2025-03-01\", \
         \"text\": \"Stable appearance. No nodule.\"}\n",
    )
    .unwrap();
    let r4 = ingest_reports(&lake, &[ambiguous.as_path()], 400).await;
    assert_eq!(r4.lake_version, 4);
    // Lake version 5: the demo's genomics (a 1000 Genomes excerpt, a synthetic annotated
    // panel); 6: their sample links.
    let (vcfs, links) = medlake::synth::write_demo_genomics(&root.join("genomics")).unwrap();
    let vcfs: Vec<String> = vcfs.iter().map(|p| p.display().to_string()).collect();
    let vopts = medlake::ingest::vcf::VcfIngestOptions {
        collection: "demo".into(),
        progress: false,
        ..Default::default()
    };
    let v5 = medlake::ingest::vcf::ingest_vcf(&lake, &vcfs, &vopts)
        .await
        .unwrap();
    assert_eq!(
        (v5.ingested, v5.problems, v5.lake_version),
        (2, 0, 5),
        "{v5:?}"
    );
    let l6 = medlake::ingest::sample_links::link_samples(&lake, &links, "demo")
        .await
        .unwrap();
    assert_eq!(l6.lake_version, 6);
    lake
}

/// Ingest report files into collection `demo` with a linking window.
pub async fn ingest_reports(
    lake: &Lake,
    inputs: &[&Path],
    window_days: i32,
) -> medlake::ingest::reports::ReportIngestSummary {
    let opts = medlake::ingest::reports::ReportIngestOptions {
        collection: "demo".into(),
        link_window_days: window_days,
        progress: false,
        ..Default::default()
    };
    let inputs: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    medlake::ingest::reports::ingest_reports(lake, &inputs, &opts)
        .await
        .expect("ingest reports")
}

/// The fetched test data (`scripts/fetch-test-data`): `MEDLAKE_TEST_DATA`, else
/// `~/.cache/medlake/test-data`.
pub fn test_data() -> PathBuf {
    std::env::var_os("MEDLAKE_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/medlake/test-data")
        })
}

/// A file of the fetched test data, or `None` when it is missing; in CI (`CI=true`) its
/// absence fails the test.
pub fn test_file(rel: &str) -> Option<PathBuf> {
    let p = test_data().join(rel);
    if p.exists() {
        return Some(p);
    }
    if in_ci() {
        panic!("{} is missing: run scripts/fetch-test-data", p.display());
    }
    eprintln!(
        "skipping: {} is missing (run scripts/fetch-test-data)",
        p.display()
    );
    None
}

/// Query results as rows of display strings, with NULL written as `null`.
pub fn display_rows(
    batches: &[datafusion::arrow::array::RecordBatch],
    null: &str,
) -> Vec<Vec<String>> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default().with_null(null);
    let mut out = Vec::new();
    for b in batches {
        let f: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            out.push(f.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    out
}

/// A numpy array as written by `np.save`: its shape and its values widened to f64 (every
/// dtype the oracles write is exact in f64: integers up to 32 bits, and counts).
pub struct Npy {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
    /// The f32 bits, for `<f4` arrays (compared bit for bit).
    pub f32_bits: Option<Vec<u32>>,
}

pub fn read_npy(path: &Path) -> Npy {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    let field = |key: &str| -> &str {
        let at = header.find(&format!("'{key}':")).unwrap() + key.len() + 3;
        header[at..].trim_start()
    };
    let descr = field("descr");
    let descr = &descr[1..descr[1..].find('\'').unwrap() + 1];
    assert!(field("fortran_order").starts_with("False"), "{header}");
    let shape_text = field("shape");
    let shape: Vec<usize> = shape_text[1..shape_text.find(')').unwrap()]
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = &bytes[start + header_len..];
    let mut f32_bits = None;
    let values: Vec<f64> = match descr {
        "|u1" => data.iter().map(|&b| f64::from(b)).collect(),
        "|i1" => data.iter().map(|&b| f64::from(b as i8)).collect(),
        "<u2" => data
            .chunks_exact(2)
            .map(|c| f64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        "<i2" => data
            .chunks_exact(2)
            .map(|c| f64::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        "<u4" => data
            .chunks_exact(4)
            .map(|c| f64::from(u32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        "<i4" => data
            .chunks_exact(4)
            .map(|c| f64::from(i32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        "<i8" => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        "<f4" => {
            let bits: Vec<u32> = data
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let v = bits.iter().map(|b| f64::from(f32::from_bits(*b))).collect();
            f32_bits = Some(bits);
            v
        }
        other => panic!("{}: dtype {other} not read here", path.display()),
    };
    assert_eq!(
        values.len(),
        shape.iter().product::<usize>(),
        "{}",
        path.display()
    );
    Npy {
        shape,
        values,
        f32_bits,
    }
}
