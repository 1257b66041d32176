//! VCF/BCF ingest against bcftools (tests/oracle/vcf_bcftools.py) on real files: records
//! per chromosome, per-sample non-reference genotype counts and alt allele counts, region
//! queries, and INFO values; plus idempotency, an interrupted file, bad input and sample
//! links.

use crate::common;

use crate::common::test_file;

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use medlake::genomics::normalize_chrom;
use medlake::ingest::vcf::{ingest_vcf, VcfIngestOptions, VcfIngestSummary};
use medlake::Lake;
use serde_json::Value;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn have_bcftools() -> bool {
    let ok = std::process::Command::new("bcftools")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || !in_ci(),
        "bcftools is missing (apt-get install bcftools)"
    );
    if !ok {
        eprintln!("skipping: bcftools is missing");
    }
    ok
}

fn opts() -> VcfIngestOptions {
    VcfIngestOptions {
        progress: false,
        ..Default::default()
    }
}

async fn ingest(lake: &Lake, inputs: &[&Path], o: &VcfIngestOptions) -> VcfIngestSummary {
    let inputs: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    ingest_vcf(lake, &inputs, o).await.expect("ingest vcf")
}

async fn rows(lake: &Lake, sql: &str) -> Vec<Vec<String>> {
    let s = medlake::open_session(lake, None).await.unwrap();
    let batches: Vec<RecordBatch> = s
        .ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    common::display_rows(&batches, ".")
}

fn oracle(file: &Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(common::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/vcf_bcftools.py"))
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oracle failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn counts(v: &Value) -> BTreeMap<String, i64> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_i64().unwrap()))
        .collect()
}

/// The checks every file gets: records per chromosome, and per sample the genotypes with a
/// non-reference allele and the number of non-reference alleles.
async fn check_against_bcftools(
    rel: &str,
    info_fields: &[&str],
    format_fields: &[&str],
) -> Option<(Lake, Value)> {
    let file = test_file(rel)?;
    if !have_bcftools() {
        return None;
    }
    let mut args: Vec<&str> = Vec::new();
    for f in info_fields {
        args.extend(["--info", f]);
    }
    for f in format_fields {
        args.extend(["--format", f]);
    }
    let want = oracle(&file, &args);
    let tmp = tempfile::tempdir().unwrap().keep();
    let lake = Lake::open(&tmp.join("lake").display().to_string()).unwrap();
    let s = ingest(&lake, &[&file], &opts()).await;
    assert_eq!(s.ingested, 1, "{rel}: {s:?}");

    let want_chroms: BTreeMap<String, i64> = counts(&want["records_per_chrom"])
        .into_iter()
        .map(|(c, n)| (normalize_chrom(&c).into_owned(), n))
        .collect();
    let got: BTreeMap<String, i64> =
        rows(&lake, "SELECT chrom, count(*) FROM variants GROUP BY chrom")
            .await
            .into_iter()
            .map(|r| (r[0].clone(), r[1].parse().unwrap()))
            .collect();
    assert_eq!(got, want_chroms, "{rel}: records per chromosome");
    assert_eq!(s.records as i64, want_chroms.values().sum::<i64>(), "{rel}");

    let samples: Vec<String> = want["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    if !samples.is_empty() {
        let got_samples: Vec<String> =
            rows(&lake, "SELECT sample_id FROM samples ORDER BY sample_index")
                .await
                .into_iter()
                .map(|r| r[0].clone())
                .collect();
        assert_eq!(got_samples, samples, "{rel}: samples");
        let nonref: BTreeMap<String, i64> = rows(
            &lake,
            "SELECT s.sample_id, count(g.sample_id) FROM samples s \
             LEFT JOIN genotypes g ON g.sample_id = s.sample_id AND array_max(g.alleles) > 0 \
             GROUP BY s.sample_id",
        )
        .await
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
        assert_eq!(
            nonref,
            counts(&want["nonref_genotypes_per_sample"]),
            "{rel}: non-reference genotypes per sample"
        );
        let alt_alleles: BTreeMap<String, i64> = rows(
            &lake,
            "SELECT s.sample_id, count(a.sample_id) FROM samples s LEFT JOIN \
             (SELECT sample_id, unnest(alleles) AS allele FROM genotypes) a \
             ON a.sample_id = s.sample_id AND a.allele > 0 GROUP BY s.sample_id",
        )
        .await
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
        assert_eq!(
            alt_alleles,
            counts(&want["alt_count_sum_per_sample"]),
            "{rel}: non-reference alleles per sample"
        );
    }

    for field in info_fields {
        let mut want_values: Vec<(String, i64, String, String, String)> = want["info"][field]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let r = r.as_array().unwrap();
                (
                    normalize_chrom(r[0].as_str().unwrap()).into_owned(),
                    r[1].as_i64().unwrap(),
                    r[2].as_str().unwrap().to_string(),
                    r[3].as_str().unwrap().to_string(),
                    r[4].as_str().unwrap().to_string(),
                )
            })
            .collect();
        want_values.sort();
        let ty = rows(
            &lake,
            &format!("SELECT arrow_typeof(info['{field}']) FROM variants LIMIT 1"),
        )
        .await;
        let value = if ty[0][0].starts_with("List") {
            format!("array_to_string(info['{field}'], ',')")
        } else {
            format!("CAST(info['{field}'] AS VARCHAR)")
        };
        let sql = format!(
            "SELECT chrom, pos, ref, array_to_string(alt, ','), {value} \
             FROM variants ORDER BY chrom, pos, ref, 4"
        );
        let got = rows(&lake, &sql).await;
        assert_eq!(got.len(), want_values.len(), "{rel}: INFO/{field} rows");
        for (g, w) in got.iter().zip(&want_values) {
            assert_eq!(
                (&g[0], g[1].parse::<i64>().unwrap(), &g[2], &g[3]),
                (&w.0, w.1, &w.2, &w.3),
                "{rel}: INFO/{field} row order"
            );
            assert!(
                same_value(&g[4], &w.4),
                "{rel}: INFO/{field} at {}:{}: {:?} here, {:?} from bcftools",
                w.0,
                w.1,
                g[4],
                w.4
            );
        }
    }
    for field in format_fields {
        check_format_field(&lake, rel, field, &want["format"][field]).await;
    }
    Some((lake, want))
}

/// Every sample's value of a FORMAT field, record by record, as bcftools reads it.
async fn check_format_field(lake: &Lake, rel: &str, field: &str, want: &Value) {
    let key = |chrom: &str, pos: i64, r: &str, a: &str, s: &str| {
        (
            normalize_chrom(chrom).into_owned(),
            pos,
            r.to_string(),
            a.to_string(),
            s.to_string(),
        )
    };
    let mut want: Vec<_> = want
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            let t = |i: usize| r[i].as_str().unwrap();
            (
                key(t(0), r[1].as_i64().unwrap(), t(2), t(3), t(4)),
                t(5).to_string(),
            )
        })
        .collect();
    want.sort();
    let ty = rows(
        lake,
        &format!("SELECT arrow_typeof(\"{field}\") FROM genotypes LIMIT 1"),
    )
    .await;
    let value = if ty[0][0].starts_with("List") {
        format!("array_to_string(g.\"{field}\", ',', '.')")
    } else {
        format!("CAST(g.\"{field}\" AS VARCHAR)")
    };
    let sql = format!(
        "SELECT v.chrom, v.pos, v.ref, array_to_string(v.alt, ','), g.sample_id, {value} \
         FROM genotypes g JOIN variants v ON v.variant_id = g.variant_id"
    );
    let mut got: Vec<_> = rows(lake, &sql)
        .await
        .into_iter()
        .map(|r| {
            (
                key(&r[0], r[1].parse().unwrap(), &r[2], &r[3], &r[4]),
                r[5].clone(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got.len(), want.len(), "{rel}: FORMAT/{field} rows");
    assert!(!got.is_empty(), "{rel}: FORMAT/{field} has no rows");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0, "{rel}: FORMAT/{field} row order");
        // bcftools prints a list whose items are all missing as one `.`.
        let all_missing = |s: &str| s.split(',').all(|x| x == ".");
        assert!(
            same_value(&g.1, &w.1) || (all_missing(&g.1) && all_missing(&w.1)),
            "{rel}: FORMAT/{field} at {:?}: {:?} here, {:?} from bcftools",
            w.0,
            g.1,
            w.1
        );
    }
}

/// bcftools prints numbers its own way (`0.150` → `0.15`) and a missing value as `.`.
fn same_value(ours: &str, theirs: &str) -> bool {
    let norm = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|x| x.trim().to_string())
            .map(|x| if x.is_empty() { ".".into() } else { x })
            .collect()
    };
    let (a, b) = (norm(ours), norm(theirs));
    if a == b {
        return true;
    }
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(p), Ok(q)) => (p - q).abs() <= 1e-6 * q.abs().max(1.0),
                // Flags: bcftools prints 1 when set and . when not.
                _ => x == y || (x == "true" && y == "1") || (x == "false" && y == "."),
            })
}

#[tokio::test(flavor = "multi_thread")]
async fn thousand_genomes_629_samples_match_bcftools() {
    let Some((lake, _)) = check_against_bcftools(
        "pyvcf3/vcf/test/1kg.vcf.gz",
        &["AF", "DP", "EUR_R2"],
        &["AD", "DP", "GD", "GL", "GQ", "OG"],
    )
    .await
    else {
        return;
    };
    let n = rows(&lake, "SELECT count(*) FROM genotypes").await;
    assert_eq!(n[0][0], (629 * 381).to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn chr22_with_tabix_index_matches_bcftools_including_regions() {
    let rel = "variantannotation/extdata/chr22.vcf.gz";
    let Some((lake, _)) =
        check_against_bcftools(rel, &["LDAF", "AC", "AN", "SVTYPE"], &["DS", "GL"]).await
    else {
        return;
    };
    let file = test_file(rel).unwrap();
    for region in [
        "22:50300000-50400000",
        "chr22:50301422-50301500",
        "22:1-16050500",
    ] {
        for (overlap, sql_args) in [("record", "chrom, pos, \"end\""), ("pos", "chrom, pos")] {
            // The file names chromosome 22 "22"; SQL takes either spelling.
            let file_region = region.trim_start_matches("chr");
            let want = oracle(&file, &["--region", file_region, "--overlap", overlap]);
            let mut want: Vec<String> = want["regions"][file_region]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let r = r.as_array().unwrap();
                    format!(
                        "{}:{}:{}:{}",
                        normalize_chrom(r[0].as_str().unwrap()),
                        r[1],
                        r[2].as_str().unwrap(),
                        r[3].as_str().unwrap()
                    )
                })
                .collect();
            want.sort();
            let mut got: Vec<String> = rows(
                &lake,
                &format!(
                    "SELECT chrom, pos, ref, array_to_string(alt, ',') FROM variants \
                     WHERE in_region({sql_args}, '{region}')"
                ),
            )
            .await
            .into_iter()
            .map(|r| r.join(":"))
            .collect();
            got.sort();
            assert!(!want.is_empty() || region.starts_with("22:1-"), "{region}");
            assert_eq!(got, want, "{region} ({overlap} overlap)");
        }
    }
    // The region is pushed down: the plan's filter is plain comparisons on the scan.
    let plan = rows(
        &lake,
        "EXPLAIN SELECT count(*) FROM genotypes WHERE in_region(chrom, pos, '22:50300000-50400000')",
    )
    .await;
    let text: String = plan
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!text.contains("in_region"), "{text}");
    assert!(text.contains("pruning_predicate"), "{text}");
    assert!(text.contains("pos_max@"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn snpeff_bcf_with_csi_matches_the_vcf_and_bcftools() {
    let Some((lake, _)) = check_against_bcftools(
        "cyvcf2/tests/test.snpeff.bcf",
        &["AC", "AF", "DP", "DS"],
        &["AD", "DP", "GQ", "PL"],
    )
    .await
    else {
        return;
    };
    // The same records as text: the same effects.
    let vcf = test_file("cyvcf2/tests/test.snpeff.vcf").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let text_lake = Lake::open(&tmp.path().join("lake").display().to_string()).unwrap();
    ingest(&text_lake, &[&vcf], &opts()).await;
    let q = "SELECT chrom, pos, allele, gene, effect, impact, feature, hgvs_c, hgvs_p \
             FROM variant_effects ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9";
    let from_bcf = rows(&lake, q).await;
    assert!(!from_bcf.is_empty());
    assert_eq!(from_bcf, rows(&text_lake, q).await);
    // Effects against the raw EFF text (snpEff 3), split by hand.
    let raw = std::process::Command::new("bcftools")
        .args(["query", "-f", "%POS\\t%INFO/EFF\\n"])
        .arg(&vcf)
        .output()
        .unwrap();
    let mut entries = 0;
    for line in String::from_utf8(raw.stdout).unwrap().lines() {
        let (_, ann) = line.split_once('\t').unwrap();
        if ann != "." {
            entries += ann.split(',').count();
        }
    }
    assert_eq!(from_bcf.len(), entries);
}

#[tokio::test(flavor = "multi_thread")]
async fn multiallelic_and_haploid_genotypes_match_bcftools() {
    check_against_bcftools("cyvcf2/tests/o.vcf.gz", &[], &["GQ", "GQX", "DP", "AD"]).await;
    check_against_bcftools(
        "cyvcf2/tests/test-haploidX.vcf",
        &[],
        &["AD", "GQ", "PGT", "PL", "SB"],
    )
    .await;
    check_against_bcftools(
        "cyvcf2/tests/test-format-string.vcf",
        &[],
        &["ADP_ALL", "RULE", "TSTRING"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn split_multiallelic_gives_one_row_per_alt_allele() {
    let Some(file) = test_file("cyvcf2/tests/o.vcf.gz") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lake = Lake::open(&tmp.path().join("lake").display().to_string()).unwrap();
    let o = VcfIngestOptions {
        split_multiallelic: true,
        ..opts()
    };
    let s = ingest(&lake, &[&file], &o).await;
    // Each record becomes as many rows as it has ALT alleles, counted here from the text.
    let text = {
        use std::io::Read;
        let mut d = flate2::read::MultiGzDecoder::new(std::fs::File::open(&file).unwrap());
        let mut t = String::new();
        d.read_to_string(&mut t).unwrap();
        t
    };
    let alts: u64 = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').nth(4).unwrap().split(',').count() as u64)
        .sum();
    assert_eq!(s.variants, alts);
    assert!(s.variants > s.records);
    // alt_count summed over the split rows equals the ALT alleles in the text's complete
    // genotypes (no missing allele), counted here from the GT strings.
    let mut want = 0i64;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split('\t').collect();
        let Some(gt_at) = f[8].split(':').position(|k| k == "GT") else {
            continue;
        };
        for sample in &f[9..] {
            let gt = sample.split(':').nth(gt_at).unwrap_or(".");
            let alleles: Vec<&str> = gt.split(['/', '|']).collect();
            if alleles.iter().all(|a| a.parse::<u32>().is_ok()) {
                want += alleles.iter().filter(|a| **a != "0").count() as i64;
            }
        }
    }
    let per_alt = rows(&lake, "SELECT sum(alt_count) FROM genotypes").await;
    assert_eq!(per_alt[0][0].parse::<i64>().unwrap(), want);
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_is_idempotent_and_a_lake_holds_files_of_both_naming_styles() {
    let (Some(a), Some(b)) = (
        test_file("variantannotation/extdata/chr22.vcf.gz"),
        test_file("pyvcf3/vcf/test/1kg.vcf.gz"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lake = Lake::open(&tmp.path().join("lake").display().to_string()).unwrap();
    let s1 = ingest(&lake, &[&a, &b], &opts()).await;
    assert_eq!((s1.ingested, s1.duplicates), (2, 0));
    let before = rows(
        &lake,
        "SELECT count(*), count(DISTINCT variant_id) FROM variants",
    )
    .await;
    assert_eq!(before[0][0], before[0][1], "variant ids are unique");
    assert_eq!(before[0][0], (10376 + 381).to_string());
    // 1kg declares AF as a list, chr22 as one value: the second file's AF gets a name of
    // its own, with a warning, rather than losing values.
    let conflicts = rows(
        &lake,
        "SELECT message FROM ingest_errors WHERE error_kind = 'type_conflict'",
    )
    .await;
    assert!(!conflicts.is_empty());
    let s2 = ingest(&lake, &[&a, &b], &opts()).await;
    assert_eq!((s2.ingested, s2.duplicates, s2.problems), (0, 2, 0));
    let after = rows(&lake, "SELECT count(*) FROM variants").await;
    assert_eq!(before[0][0], after[0][0]);
    // Genotypes join to their variants.
    let joined = rows(
        &lake,
        "SELECT count(*) FROM genotypes g JOIN variants v ON v.variant_id = g.variant_id",
    )
    .await;
    assert_eq!(joined[0][0], (10376 * 5 + 381 * 629).to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_recorded_and_the_rest_goes_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let header = "##fileformat=VCFv4.2\n##contig=<ID=1,length=1000>\n\
##INFO=<ID=DP,Number=1,Type=Integer,Description=\"Depth\">\n\
##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">\n\
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2\n";
    let body = "1\t100\t.\tA\tG\t50\tPASS\tDP=10\tGT\t0/1\t1/1\n\
1\tnotanumber\t.\tA\tG\t50\tPASS\tDP=10\tGT\t0/1\t1/1\n\
1\t300\t.\tA\tG\t50\tPASS\tDP=abc\tGT\t0/1\t0/0\n\
1\t400\t.\tA\tG\t50\tPASS\tXX=1\tGT\t0/1\t0/0\n\
1\t350\t.\tA\tG\t50\tPASS\tDP=3\tGT\t0/1\n\
1\t500\t.\tA\tG\t50\tPASS\tDP=5\tGT\t0|1\t./.\n";
    std::fs::write(dir.join("bad.vcf"), format!("{header}{body}")).unwrap();
    std::fs::write(dir.join("not.vcf"), "this is not a VCF\n").unwrap();
    // A bgzipped copy cut in the middle: the records before the cut are kept.
    let good = format!(
        "{header}{}",
        (1..=2000)
            .map(|i| format!("1\t{}\t.\tA\tC\t.\t.\tDP={i}\tGT\t0/1\t0/0\n", i * 10))
            .collect::<String>()
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, good.as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(dir.join("truncated.vcf.gz"), &bytes[..bytes.len() * 2 / 3]).unwrap();
    let lake = Lake::open(&tmp.path().join("lake").display().to_string()).unwrap();
    let s = ingest(&lake, &[&dir], &opts()).await;
    assert_eq!(s.files_seen, 3, "{s:?}");
    assert_eq!(s.ingested + s.failed, 3, "{s:?}");
    let errs = rows(
        &lake,
        "SELECT file_uri, error_kind FROM ingest_errors WHERE source = 'vcf' ORDER BY 1",
    )
    .await;
    let kinds: Vec<(String, String)> = errs
        .iter()
        .map(|r| (r[0].rsplit('/').next().unwrap().to_string(), r[1].clone()))
        .collect();
    let has = |uri: &str, kind: &str| kinds.iter().any(|(u, k)| u == uri && k == kind);
    assert!(
        has("bad.vcf#line=7", "malformed_line") || has("bad.vcf#line=7", "malformed_record"),
        "{kinds:?}"
    );
    assert!(has("bad.vcf#line=8", "bad_info_value"), "{kinds:?}");
    assert!(has("bad.vcf#line=9", "undeclared_info"), "{kinds:?}");
    assert!(has("bad.vcf#line=10", "sample_count"), "{kinds:?}");
    assert!(has("bad.vcf#line=10", "unsorted"), "{kinds:?}");
    assert!(
        kinds
            .iter()
            .any(|(u, k)| u.starts_with("truncated.vcf.gz") && k == "truncated"),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|(u, _)| u == "not.vcf"), "{kinds:?}");
    // bad.vcf keeps every record it could place: 100, 300 (DP null), 400, 500.
    let kept = rows(
        &lake,
        "SELECT pos, info['DP'] FROM variants WHERE source_uri LIKE '%bad.vcf' ORDER BY pos",
    )
    .await;
    assert_eq!(
        kept,
        [["100", "10"], ["300", "."], ["400", "."], ["500", "5"]]
            .map(|r| r.map(String::from).to_vec())
            .to_vec()
    );
    let truncated = rows(
        &lake,
        "SELECT count(*) FROM variants WHERE source_uri LIKE '%truncated.vcf.gz'",
    )
    .await;
    let n: i64 = truncated[0][0].parse().unwrap();
    assert!(n > 100 && n < 2000, "{n}");
    // Again: nothing new, no error recorded twice.
    let again = ingest(&lake, &[&dir], &opts()).await;
    assert_eq!(again.problems, 0, "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_file_is_cleaned_up_and_ingested_again() {
    let Some(file) = test_file("variantannotation/extdata/chr22.vcf.gz") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lake = Lake::open(&tmp.path().join("lake").display().to_string()).unwrap();
    let s = ingest(&lake, &[&file], &opts()).await;
    assert_eq!(s.ingested, 1);
    // Simulate a crash after the data commits and before the `complete` row: drop that row.
    let t = lake.table("vcf_files").await.unwrap().unwrap();
    t.delete()
        .with_predicate("status = 'complete'")
        .await
        .unwrap();
    let again = ingest(&lake, &[&file], &opts()).await;
    assert_eq!((again.ingested, again.duplicates), (1, 0), "{again:?}");
    let n = rows(
        &lake,
        "SELECT count(*), count(DISTINCT variant_id) FROM variants",
    )
    .await;
    assert_eq!(n[0], ["10376", "10376"]);
    let g = rows(&lake, "SELECT count(*) FROM genotypes").await;
    assert_eq!(g[0][0], (10376 * 5).to_string());
    let samples = rows(&lake, "SELECT count(*) FROM samples").await;
    assert_eq!(samples[0][0], "5");
}

#[tokio::test(flavor = "multi_thread")]
async fn sample_links_are_idempotent_and_conflicts_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = Lake::open(&tmp.path().join("lake").display().to_string()).unwrap();
    let csv = tmp.path().join("links.csv");
    std::fs::write(
        &csv,
        "sample_id,PatientID\nHG00096,DEMO-001\nHG00097,DEMO-002\nHG00096,DEMO-009\n,X\n",
    )
    .unwrap();
    let s = medlake::ingest::sample_links::link_samples(&lake, &csv, "default")
        .await
        .unwrap();
    assert_eq!((s.linked, s.conflicts, s.invalid), (2, 1, 1), "{s:?}");
    let s = medlake::ingest::sample_links::link_samples(&lake, &csv, "default")
        .await
        .unwrap();
    assert_eq!(
        (s.linked, s.already_linked, s.conflicts),
        (0, 2, 1),
        "{s:?}"
    );
    let r = rows(
        &lake,
        "SELECT sample_id, \"PatientID\" FROM sample_links ORDER BY 1",
    )
    .await;
    assert_eq!(
        r,
        [["HG00096", "DEMO-001"], ["HG00097", "DEMO-002"]]
            .map(|r| r.map(String::from).to_vec())
            .to_vec()
    );
    let e = rows(
        &lake,
        "SELECT count(*) FROM ingest_errors WHERE source = 'sample_links'",
    )
    .await;
    assert_eq!(e[0][0], "2");
    // Another collection's sample of the same name is its own sample: no conflict.
    std::fs::write(&csv, "sample_id,PatientID\nHG00096,OTHER-001\n").unwrap();
    let s = medlake::ingest::sample_links::link_samples(&lake, &csv, "trial-b")
        .await
        .unwrap();
    assert_eq!((s.linked, s.conflicts), (1, 0), "{s:?}");
    let r = rows(
        &lake,
        "SELECT collection, \"PatientID\" FROM sample_links WHERE sample_id = 'HG00096' ORDER BY 1",
    )
    .await;
    assert_eq!(
        r,
        [["default", "DEMO-001"], ["trial-b", "OTHER-001"]]
            .map(|r| r.map(String::from).to_vec())
            .to_vec()
    );
}

/// Every genomics table carries the ingest's collection, so row policies can name it; a
/// file is a duplicate only within its collection, and each collection's copy is whole.
#[tokio::test(flavor = "multi_thread")]
async fn collections_are_on_every_row_and_dedupe_is_per_collection() {
    let Some(file) = test_file("cyvcf2/tests/test.snpeff.vcf") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lake = Lake::open(&tmp.path().join("lake").display().to_string()).unwrap();
    let with = |c: &str| VcfIngestOptions {
        collection: c.into(),
        ..opts()
    };
    let a = ingest(&lake, &[&file], &with("lung")).await;
    assert_eq!((a.ingested, a.duplicates), (1, 0), "{a:?}");
    let again = ingest(&lake, &[&file], &with("lung")).await;
    assert_eq!((again.ingested, again.duplicates), (0, 1), "{again:?}");
    let b = ingest(&lake, &[&file], &with("breast")).await;
    assert_eq!((b.ingested, b.duplicates), (1, 0), "{b:?}");
    assert!(a.variants > 0 && a.genotypes > 0 && a.effects > 0, "{a:?}");
    for (table, per_file) in [
        ("variants", a.variants),
        ("genotypes", a.genotypes),
        ("variant_effects", a.effects),
        ("vcf_files", 2),
    ] {
        let r = rows(
            &lake,
            &format!(
                "SELECT collection, count(*) FROM {table} GROUP BY collection ORDER BY collection"
            ),
        )
        .await;
        let want = |c: &str| vec![c.to_string(), per_file.to_string()];
        assert_eq!(r, vec![want("breast"), want("lung")], "{table}");
    }
    let samples = rows(
        &lake,
        "SELECT collection, count(*) FROM samples GROUP BY collection ORDER BY 1",
    )
    .await;
    assert_eq!(samples.len(), 2, "{samples:?}");
    assert_eq!(samples[0][1], samples[1][1]);
    // The two copies do not share variant ids, so joins within a collection stay exact.
    let shared = rows(
        &lake,
        "SELECT count(*) FROM variants l JOIN variants b ON l.variant_id = b.variant_id \
         WHERE l.collection = 'lung' AND b.collection = 'breast'",
    )
    .await;
    assert_eq!(shared[0][0], "0");
}

/// `vcf_scan` reads raw files, through the tabix index when there is one, and its region
/// gives the records `bcftools view -r` gives.
#[tokio::test(flavor = "multi_thread")]
async fn vcf_scan_reads_raw_files_like_bcftools_view_r() {
    let (Some(indexed), Some(plain_gz), Some(bcf)) = (
        test_file("variantannotation/extdata/chr22.vcf.gz"),
        test_file("pyvcf3/vcf/test/1kg.vcf.gz"),
        test_file("cyvcf2/tests/test.snpeff.bcf"),
    ) else {
        return;
    };
    if !have_bcftools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lake = Lake::open(&tmp.path().join("lake").display().to_string()).unwrap();
    for (file, region) in [
        (&indexed, "22:50300000-50400000"),
        (&indexed, "22:50999000-"),
        (&plain_gz, "2:1-200000000"),
        (&bcf, "chr1:1-70000"),
    ] {
        let want = oracle(file, &["--region", region]);
        let mut want: Vec<String> = want["regions"][region]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let r = r.as_array().unwrap();
                format!("{}:{}", normalize_chrom(r[0].as_str().unwrap()), r[1])
            })
            .collect();
        want.sort();
        let sql = format!(
            "SELECT chrom, pos FROM vcf_scan('{}', '{region}')",
            file.display()
        );
        let mut got: Vec<String> = rows(&lake, &sql)
            .await
            .into_iter()
            .map(|r| r.join(":"))
            .collect();
        got.sort();
        assert!(!want.is_empty(), "{region}");
        assert_eq!(got, want, "{} {region}", file.display());
    }
    let all = rows(
        &lake,
        &format!("SELECT count(*) FROM vcf_scan('{}')", indexed.display()),
    )
    .await;
    assert_eq!(all[0][0], "10376");
}
