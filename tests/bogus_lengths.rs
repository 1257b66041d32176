//! Length fields that point far past the end of a file must not make medlake allocate
//! what they claim. Alone in its own test binary (not a module of `tests/integration.rs`),
//! so that the process's peak memory (VmHWM) is this test's: another test in the same
//! process could raise it, falsely, or have raised it before, hiding a large allocation.

// The integration tests' helpers; this binary uses two of them.
#[allow(dead_code)]
mod common;

use medlake::synth;
use medlake::Lake;

/// Peak resident memory of this process, in KiB (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Offset of the first explicit-VR element with this tag and a 2-byte length field.
fn find_element(bytes: &[u8], group: u16, element: u16, vr: &[u8; 2]) -> usize {
    let mut pat = Vec::new();
    pat.extend_from_slice(&group.to_le_bytes());
    pat.extend_from_slice(&element.to_le_bytes());
    pat.extend_from_slice(vr);
    bytes
        .windows(6)
        .position(|w| w == pat.as_slice())
        .expect("element present")
}

#[tokio::test(flavor = "multi_thread")]
async fn bogus_lengths_cost_no_memory_and_keep_the_header_before_them() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let p = &synth::DEMO_PATIENTS[0];
    let s = &synth::DEMO_SERIES[0];
    let slice = synth::write_slice(&corpus.join("src"), p, s, 0).unwrap();
    let bytes = std::fs::read(&slice).unwrap();
    std::fs::remove_dir_all(corpus.join("src")).unwrap();

    // Eight files: a 4 GiB claim in the file's first data set element, and seven where
    // StudyDescription (LO, after the identifying elements) is rewritten as UN (a 4-byte
    // length) claiming between 1 and 4 GiB. Each file keeps its own SOPInstanceUID.
    let bad = corpus.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("first.dcm"), common::bogus_length(&bytes)).unwrap();
    let desc = find_element(&bytes, 0x0008, 0x1030, b"LO");
    let uid_at = find_element(&bytes, 0x0008, 0x0018, b"UI");
    for i in 1..8u32 {
        let mut b = bytes[..desc].to_vec();
        // A distinct SOPInstanceUID per file: change its last digit.
        let uid_len = u16::from_le_bytes([b[uid_at + 6], b[uid_at + 7]]) as usize;
        let mut end = uid_at + 8 + uid_len - 1;
        if b[end] == 0 {
            end -= 1;
        }
        b[end] = b'0' + i as u8;
        b.extend_from_slice(&[0x08, 0x00, 0x30, 0x10, b'U', b'N', 0, 0]);
        b.extend_from_slice(&(0x4000_0000u32 * (i % 4 + 1) - 2).to_le_bytes());
        b.extend_from_slice(&bytes[desc + 8..]);
        std::fs::write(bad.join(format!("mid{i}.dcm")), b).unwrap();
    }

    let lake = Lake::open(&tmp.path().join("lake").display().to_string()).unwrap();
    let before = peak_rss_kib().unwrap_or(0);
    let summary = common::ingest(&lake, &[&bad], "bogus").await;
    let after = peak_rss_kib().unwrap_or(0);
    assert_eq!(summary.files_seen, 8);
    assert_eq!(summary.ingested, 7, "{summary:?}");
    assert_eq!(summary.errors, 1);
    // One 1 GiB claim honoured would show here; the lake writes themselves take tens of MiB.
    assert!(
        after.saturating_sub(before) < 256 * 1024,
        "peak RSS grew by {} MiB",
        (after - before) / 1024
    );

    let session = medlake::open_session(&lake, None).await.unwrap();
    let batches = session
        .ctx
        .sql(
            "SELECT count(*) AS n, count(PatientID) AS with_id, count(StudyDescription) AS with_desc, \
             min(header_warning) AS w FROM instances",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    // Every row kept what precedes the bogus element (PatientID comes later in the file
    // and is lost with the rest), and says where the header was cut.
    assert!(text.contains("| 7 "), "{text}");
    assert!(text.contains("(0008,1030)"), "{text}");
    assert!(text.contains("declares"), "{text}");
}
