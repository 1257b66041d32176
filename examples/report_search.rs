//! Ingest a few radiology reports through the library API and search them, telling an
//! affirmed finding from a negated or uncertain one.
//!
//! ```sh
//! cargo run --release --example report_search -- /tmp/report-lake
//! ```
//!
//! Run it twice on one lake and the second ingest counts all four as duplicates.

use medlake::ingest::reports::{ingest_reports, ReportIngestOptions};
use medlake::{open_session, Lake};

const REPORTS: &str = "report_id,PatientID,findings,impression
r1,P1,Small left pleural effusion. No pneumothorax.,Effusion.
r2,P2,No pleural effusion or pneumothorax.,Normal chest.
r3,P3,Possible small right pleural effusion.,Cannot exclude effusion.
r4,P4,The heart is enlarged. Lungs are clear.,No acute disease.
";

#[tokio::main]
async fn main() -> medlake::Result<()> {
    let location = std::env::args().nth(1).unwrap_or_else(|| {
        let dir = std::env::temp_dir().join("medlake-example-report-lake");
        dir.display().to_string()
    });
    let lake = Lake::open(&location)?;
    let csv = std::env::temp_dir().join("medlake-example-reports.csv");
    std::fs::write(&csv, REPORTS).map_err(|e| medlake::Error::Invalid(e.to_string()))?;
    let opts = ReportIngestOptions {
        collection: "example".into(),
        progress: false,
        ..Default::default()
    };
    let summary = ingest_reports(&lake, &[csv.display().to_string()], &opts).await?;
    println!("{summary:?}");
    let session = open_session(&lake, None).await?;
    for (what, sql) in [
        (
            "pleural effusion, any mention",
            "SELECT report_id, round(score, 3) AS score, snippet \
             FROM report_search('\"pleural effusion\"') ORDER BY score DESC",
        ),
        (
            "pleural effusion, affirmed only",
            "SELECT report_id FROM report_search('\"pleural effusion\"', 'affirmed')",
        ),
        (
            "pleural effusion, uncertain only",
            "SELECT report_id FROM report_search('\"pleural effusion\"', 'uncertain')",
        ),
        (
            "cardiomegaly (a synonym finds \"heart is enlarged\")",
            "SELECT report_id, snippet FROM report_search('cardiomegaly')",
        ),
    ] {
        println!("\n{what}:");
        session.ctx.sql(sql).await?.show().await?;
    }
    Ok(())
}
