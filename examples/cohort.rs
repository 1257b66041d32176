//! Open a lake, run a cohort query through the library API, and print the rows.
//!
//! ```sh
//! cargo run --release -- demo                 # builds ./demo-lake
//! cargo run --release --example cohort -- ./demo-lake
//! ```

use medlake::{open_session, Lake};

#[tokio::main]
async fn main() -> medlake::Result<()> {
    let location = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./demo-lake".into());
    let lake = Lake::open(&location)?;
    let session = open_session(&lake, None).await?;
    println!(
        "lake {} at lake version {:?}",
        lake.root(),
        session.lake_version
    );
    let df = session
        .ctx
        .sql(
            "SELECT s.PatientID, st.PatientSex, st.patient_age_years, s.SeriesDescription, \
                    s.slice_spacing_mm \
             FROM series s JOIN studies st \
               ON st.collection = s.collection AND st.StudyInstanceUID = s.StudyInstanceUID \
             WHERE s.Modality = 'CT' AND s.slice_spacing_mm <= 1.25 \
             ORDER BY s.PatientID, s.SeriesDescription",
        )
        .await?;
    df.show().await?;
    Ok(())
}
