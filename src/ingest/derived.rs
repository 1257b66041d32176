//! The `series`, `studies` and `patients` tables, derived from `instances`.
//!
//! They are rebuilt whole from `instances` (one overwrite commit each) whenever `instances`
//! has changed since the last recorded lake version; an ingest killed before this step is
//! completed by the next run. Series geometry comes from [`medlake_udfs::geometry`]:
//! slice spacing is measured along the slice normal, not copied from SliceThickness.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use medlake_udfs::geometry::{series_geometry, SliceGeometry};

use crate::error::Result;
use crate::lake::Lake;
use crate::tables::{INSTANCES, PATIENTS, REPORTS, REPORT_LINKS, SERIES, STUDIES};

/// Rebuild the derived tables when `instances` moved since the last lake version.
pub async fn refresh_if_stale(lake: &Lake) -> Result<()> {
    let Some(instances) = lake.table(INSTANCES).await? else {
        return Ok(());
    };
    let current = instances.version().unwrap_or(0) as i64;
    let last = lake.lake_versions().await?.pop();
    let fresh = last.is_some_and(|v| {
        v.table_versions.get(INSTANCES) == Some(&current)
            && [SERIES, STUDIES, PATIENTS]
                .iter()
                .all(|t| v.table_versions.contains_key(*t))
    });
    if !fresh {
        refresh(lake).await?;
    }
    Ok(())
}

/// Rebuild `series`, `studies` and `patients` from `instances`.
pub async fn refresh(lake: &Lake) -> Result<()> {
    let Some(instances) = lake.table(INSTANCES).await? else {
        return Ok(());
    };
    let ctx = crate::session::plain_context();
    ctx.register_table(INSTANCES, instances.table_provider().await?)?;
    ctx.register_table("series_geometry", Arc::new(geometry_table(&ctx).await?))?;
    for (name, sql) in [
        (SERIES, SERIES_SQL),
        (STUDIES, STUDIES_SQL),
        (PATIENTS, PATIENTS_SQL),
    ] {
        let df = ctx.sql(sql).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        lake.overwrite(name, schema, batches, "derive from instances")
            .await?;
    }
    Ok(())
}

/// Per series: the geometry the slices form, as a table to join.
async fn geometry_table(ctx: &SessionContext) -> Result<MemTable> {
    let batches = ctx
        .sql(
            "SELECT collection, SeriesInstanceUID, ImagePositionPatient, \
             ImageOrientationPatient, PixelSpacing, Rows, Columns, frame_positions_mm, \
             frame_orientation, frame_pixel_spacing_mm FROM instances \
             WHERE SeriesInstanceUID IS NOT NULL",
        )
        .await?
        .collect()
        .await?;
    type Key = (String, String);
    struct Acc {
        slices: Vec<SliceGeometry>,
        spacing: Option<[f64; 2]>,
        rows: Option<u32>,
        cols: Option<u32>,
    }
    let mut groups: HashMap<Key, Acc> = HashMap::new();
    for b in &batches {
        let coll = crate::lake::text_column(b.column(0))?;
        let uid = crate::lake::text_column(b.column(1))?;
        let ipp = b.column(2).as_list::<i32>();
        let iop = b.column(3).as_list::<i32>();
        let ps = b.column(4).as_list::<i32>();
        let rows = b.column(5).as_primitive::<Int32Type>();
        let cols = b.column(6).as_primitive::<Int32Type>();
        let frame_pos = b.column(7).as_list::<i32>();
        let frame_iop = b.column(8).as_list::<i32>();
        let frame_ps = b.column(9).as_list::<i32>();
        let floats = |l: &datafusion::arrow::array::ListArray, i: usize| -> Option<Vec<f64>> {
            (!l.is_null(i)).then(|| {
                let v = l.value(i);
                v.as_primitive::<Float64Type>().iter().flatten().collect()
            })
        };
        for i in 0..b.num_rows() {
            let acc = groups
                .entry((coll.value(i).to_string(), uid.value(i).to_string()))
                .or_insert(Acc {
                    slices: Vec::new(),
                    spacing: None,
                    rows: None,
                    cols: None,
                });
            if let (Some(p), Some(o)) = (floats(ipp, i), floats(iop, i)) {
                if let (Ok(position), Ok(orientation)) =
                    (<[f64; 3]>::try_from(p), <[f64; 6]>::try_from(o))
                {
                    acc.slices.push(SliceGeometry {
                        position,
                        orientation,
                    });
                }
            }
            // A multi-frame instance: each frame is a slice.
            if floats(ipp, i).is_none() && !frame_pos.is_null(i) {
                if let Some(Ok(orientation)) = floats(frame_iop, i).map(<[f64; 6]>::try_from) {
                    let frames = frame_pos.value(i);
                    let frames = frames.as_list::<i32>();
                    for f in 0..frames.len() {
                        if let Some(Ok(position)) = floats(frames, f).map(<[f64; 3]>::try_from) {
                            acc.slices.push(SliceGeometry {
                                position,
                                orientation,
                            });
                        }
                    }
                }
            }
            if acc.spacing.is_none() {
                acc.spacing = floats(ps, i)
                    .or_else(|| floats(frame_ps, i))
                    .and_then(|v| <[f64; 2]>::try_from(v).ok());
            }
            if !rows.is_null(i) && rows.value(i) > 0 {
                acc.rows = acc.rows.or(Some(rows.value(i) as u32));
            }
            if !cols.is_null(i) && cols.value(i) > 0 {
                acc.cols = acc.cols.or(Some(cols.value(i) as u32));
            }
        }
    }
    let list_f64 = || DataType::List(Arc::new(Field::new("item", DataType::Float64, true)));
    let schema = Arc::new(Schema::new(vec![
        Field::new("g_collection", DataType::Utf8, false),
        Field::new("g_series", DataType::Utf8, false),
        Field::new("slice_count", DataType::Int64, false),
        Field::new("slice_spacing_mm", DataType::Float64, true),
        Field::new("spacing_max_deviation_mm", DataType::Float64, true),
        Field::new("has_missing_slices", DataType::Boolean, false),
        Field::new("has_mixed_orientation", DataType::Boolean, false),
        Field::new("extent_min_lps_mm", list_f64(), true),
        Field::new("extent_max_lps_mm", list_f64(), true),
    ]));
    let mut c = StringBuilder::new();
    let mut s = StringBuilder::new();
    let mut n = Int64Builder::new();
    let mut sp = Float64Builder::new();
    let mut dev = Float64Builder::new();
    let mut miss = BooleanBuilder::new();
    let mut mixed = BooleanBuilder::new();
    let mut lo = ListBuilder::new(Float64Builder::new());
    let mut hi = ListBuilder::new(Float64Builder::new());
    for ((coll, uid), acc) in groups {
        let g = series_geometry(&acc.slices, acc.spacing, acc.rows, acc.cols);
        c.append_value(coll);
        s.append_value(uid);
        n.append_value(g.slice_count as i64);
        sp.append_option(g.slice_spacing_mm);
        dev.append_option(g.spacing_max_deviation_mm);
        miss.append_value(g.has_missing_slices);
        mixed.append_value(g.has_mixed_orientation);
        for (b, v) in [
            (&mut lo, g.extent_min_lps_mm),
            (&mut hi, g.extent_max_lps_mm),
        ] {
            match v {
                Some(v) => {
                    b.values().append_slice(&v);
                    b.append(true);
                }
                None => b.append(false),
            }
        }
    }
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(c.finish()),
            Arc::new(s.finish()),
            Arc::new(n.finish()),
            Arc::new(sp.finish()),
            Arc::new(dev.finish()),
            Arc::new(miss.finish()),
            Arc::new(mixed.finish()),
            Arc::new(lo.finish()),
            Arc::new(hi.finish()),
        ],
    )?;
    Ok(MemTable::try_new(schema, vec![vec![batch]])?)
}

const SERIES_SQL: &str = r#"
SELECT
  a.collection, a.SeriesInstanceUID, a.StudyInstanceUID, a.PatientID, a.Modality,
  a.SeriesNumber, a.SeriesDescription, a.SeriesDate, a.BodyPartExamined, a.ProtocolName,
  a.Manufacturer, a.ManufacturerModelName, a.FrameOfReferenceUID, a.SOPClassUID,
  a.SliceThickness, a.PixelSpacing, a.Rows, a.Columns,
  a.instance_count, a.frame_count,
  g.slice_count, g.slice_spacing_mm, g.spacing_max_deviation_mm,
  g.has_missing_slices, g.has_mixed_orientation,
  g.extent_min_lps_mm, g.extent_max_lps_mm,
  a.total_bytes
FROM (
  SELECT collection, SeriesInstanceUID,
    min(StudyInstanceUID) AS StudyInstanceUID, min(PatientID) AS PatientID,
    min(Modality) AS Modality, min(SeriesNumber) AS SeriesNumber,
    min(SeriesDescription) AS SeriesDescription, min(SeriesDate) AS SeriesDate,
    min(BodyPartExamined) AS BodyPartExamined, min(ProtocolName) AS ProtocolName,
    min(Manufacturer) AS Manufacturer, min(ManufacturerModelName) AS ManufacturerModelName,
    min(FrameOfReferenceUID) AS FrameOfReferenceUID, min(SOPClassUID) AS SOPClassUID,
    min(SliceThickness) AS SliceThickness, min(PixelSpacing) AS PixelSpacing,
    max(Rows) AS Rows, max(Columns) AS Columns,
    count(*) AS instance_count,
    sum(coalesce(NumberOfFrames, 1)) AS frame_count,
    sum(file_size) AS total_bytes
  FROM instances WHERE SeriesInstanceUID IS NOT NULL
  GROUP BY collection, SeriesInstanceUID
) a
LEFT JOIN series_geometry g
  ON a.collection = g.g_collection AND a.SeriesInstanceUID = g.g_series
ORDER BY a.collection, a.StudyInstanceUID, a.SeriesInstanceUID
"#;

// PatientAge is nnnD/W/M/Y (PS3.5 AS); without it, age comes from the two dates.
const STUDIES_SQL: &str = r#"
SELECT collection, StudyInstanceUID,
  min(PatientID) AS PatientID, min(PatientName) AS PatientName, min(PatientSex) AS PatientSex,
  min(PatientBirthDate) AS PatientBirthDate, min(PatientAge) AS PatientAge,
  min(StudyDate) AS StudyDate, min(StudyTime) AS StudyTime, min(StudyID) AS StudyID,
  min(AccessionNumber) AS AccessionNumber, min(StudyDescription) AS StudyDescription,
  min(InstitutionName) AS InstitutionName,
  coalesce(
    CASE right(min(PatientAge), 1)
      WHEN 'Y' THEN try_cast(left(min(PatientAge), 3) AS DOUBLE)
      WHEN 'M' THEN try_cast(left(min(PatientAge), 3) AS DOUBLE) / 12.0
      WHEN 'W' THEN try_cast(left(min(PatientAge), 3) AS DOUBLE) * 7.0 / 365.25
      WHEN 'D' THEN try_cast(left(min(PatientAge), 3) AS DOUBLE) / 365.25
    END,
    floor((arrow_cast(min(StudyDate), 'Int32') - arrow_cast(min(PatientBirthDate), 'Int32'))
      / 365.25)
  ) AS patient_age_years,
  array_sort(array_agg(DISTINCT Modality) FILTER (WHERE Modality IS NOT NULL)) AS modalities,
  count(DISTINCT SeriesInstanceUID) AS series_count,
  count(*) AS instance_count,
  min(coalesce(SeriesDate, AcquisitionDate, ContentDate, StudyDate)) AS first_date,
  max(coalesce(SeriesDate, AcquisitionDate, ContentDate, StudyDate)) AS last_date,
  sum(file_size) AS total_bytes
FROM instances WHERE StudyInstanceUID IS NOT NULL
GROUP BY collection, StudyInstanceUID
ORDER BY collection, StudyInstanceUID
"#;

const PATIENTS_SQL: &str = r#"
SELECT collection, PatientID,
  min(PatientName) AS PatientName, min(PatientSex) AS PatientSex,
  min(PatientBirthDate) AS PatientBirthDate,
  array_sort(array_agg(DISTINCT Modality) FILTER (WHERE Modality IS NOT NULL)) AS modalities,
  count(DISTINCT StudyInstanceUID) AS study_count,
  count(DISTINCT SeriesInstanceUID) AS series_count,
  count(*) AS instance_count,
  min(StudyDate) AS first_study_date,
  max(StudyDate) AS last_study_date,
  sum(file_size) AS total_bytes
FROM instances WHERE PatientID IS NOT NULL
GROUP BY collection, PatientID
ORDER BY collection, PatientID
"#;

/// Rebuild `report_links` when `reports` or `studies` moved since the last lake version.
pub async fn refresh_links_if_stale(lake: &Lake) -> Result<()> {
    let Some(reports) = lake.table(REPORTS).await? else {
        return Ok(());
    };
    let studies = lake.table(STUDIES).await?;
    let last = lake.lake_versions().await?.pop();
    let current = |t: &deltalake::DeltaTable| t.version().unwrap_or(0) as i64;
    let fresh = last.is_some_and(|v| {
        v.table_versions.get(REPORTS) == Some(&current(&reports))
            && v.table_versions.get(STUDIES).copied() == studies.as_ref().map(current)
            && v.table_versions.contains_key(REPORT_LINKS)
    });
    if fresh {
        return Ok(());
    }
    let ctx = crate::session::plain_context();
    ctx.register_table(REPORTS, reports.table_provider().await?)?;
    let sql = match &studies {
        Some(s) => {
            ctx.register_table(STUDIES, s.table_provider().await?)?;
            REPORT_LINKS_SQL.to_string()
        }
        // No imaging yet: every report is unlinked.
        None => format!(
            "SELECT collection, report_id, CAST(NULL AS VARCHAR) AS \"StudyInstanceUID\", \
             'unlinked' AS link_method, CAST(0 AS BIGINT) AS candidate_count, \
             false AS ambiguous FROM {REPORTS}"
        ),
    };
    let df = ctx.sql(&sql).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    lake.overwrite(REPORT_LINKS, schema, batches, "link reports to studies")
        .await?;
    Ok(())
}

/// Each report's study, by the first rule that finds any candidate:
/// 1. `study_uid`: its StudyInstanceUID is a study in the lake;
/// 2. `accession`: a study of the same collection has its AccessionNumber;
/// 3. `patient_date`: a study of the same collection and PatientID whose StudyDate is within
///    `link_window_days` of `report_date`.
///
/// More than one candidate under the winning rule is flagged `ambiguous` and the study is
/// left null: a report is never joined to a guess.
const REPORT_LINKS_SQL: &str = r#"
WITH r AS (
  SELECT collection, report_id, "StudyInstanceUID" AS suid, "AccessionNumber" AS acc,
         "PatientID" AS pid, report_date, link_window_days FROM reports
),
s AS (
  SELECT collection, "StudyInstanceUID" AS suid, "AccessionNumber" AS acc,
         "PatientID" AS pid, "StudyDate" AS study_date FROM studies
),
by_uid AS (
  SELECT r.collection, r.report_id, s.suid AS study, 1 AS rule
  FROM r JOIN s ON r.suid = s.suid
),
by_acc AS (
  SELECT r.collection, r.report_id, s.suid AS study, 2 AS rule
  FROM r JOIN s ON r.collection = s.collection AND r.acc = s.acc
),
by_date AS (
  SELECT r.collection, r.report_id, s.suid AS study, 3 AS rule
  FROM r JOIN s ON r.collection = s.collection AND r.pid = s.pid
  WHERE r.report_date IS NOT NULL AND s.study_date IS NOT NULL
    AND abs(CAST(r.report_date AS INT) - CAST(s.study_date AS INT)) <= r.link_window_days
),
cands AS (
  SELECT * FROM by_uid UNION ALL SELECT * FROM by_acc UNION ALL SELECT * FROM by_date
),
best AS (
  SELECT collection, report_id, min(rule) AS rule FROM cands GROUP BY collection, report_id
),
won AS (
  SELECT c.collection, c.report_id, c.rule, count(DISTINCT c.study) AS n, min(c.study) AS study
  FROM cands c JOIN best b
    ON c.collection = b.collection AND c.report_id = b.report_id AND c.rule = b.rule
  GROUP BY c.collection, c.report_id, c.rule
)
SELECT r.collection, r.report_id,
  CASE WHEN w.n = 1 THEN w.study END AS "StudyInstanceUID",
  CASE w.rule WHEN 1 THEN 'study_uid' WHEN 2 THEN 'accession' WHEN 3 THEN 'patient_date'
    ELSE 'unlinked' END AS link_method,
  coalesce(w.n, 0) AS candidate_count,
  coalesce(w.n > 1, false) AS ambiguous
FROM r LEFT JOIN won w ON r.collection = w.collection AND r.report_id = w.report_id
"#;
