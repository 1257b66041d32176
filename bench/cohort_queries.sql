-- Cohort queries over IDC's series-level index (one row per DICOM series).
--
-- Table `idc` = idc_index_data/idc_index.parquet from the idc-index-data 25.0.5
-- wheel (1,044,191 rows, 31 columns). bench/cohort_queries.py registers it as a
-- DuckDB view and as a medlake external table, runs each query in both, and
-- compares results.
--
-- Portability rules (every query must run unchanged in DuckDB 1.x and in
-- DataFusion 55 as configured by medlake, where identifiers are NOT lower-cased):
--   * column names are written exactly as spelled in the parquet file
--     (PatientID, series_size_MB, ...), unquoted; DuckDB resolves unquoted
--     identifiers case-insensitively, medlake case-sensitively;
--   * every output column has a snake_case alias, so both engines emit the
--     same header (the harness finds the result in medlake's stdout by it);
--   * no engine-specific functions (no ILIKE, TRY_CAST, QUALIFY, list or
--     struct functions, FILTER clauses); only standard SQL plus substr/lower/round;
--   * every ORDER BY ... LIMIT has tie-breakers, so the top-N is deterministic.
--     Nulls are ordered explicitly where a sort key can be null.
--
-- Column notes: StudyDate/SeriesDate are 'YYYY-MM-DD' strings, PatientAge is a
-- DICOM AS string like '066Y', SeriesNumber and PixelRepresentation are strings,
-- instanceCount is int64, series_size_MB is double.
--
-- Each query is preceded by a `-- name: <query_name>` line and ends with `;`.

-- name: ct_large_series_count
-- Filtered count: big CT series (>= 100 slices and > 50 MB).
SELECT count(*) AS n_series,
       sum(instanceCount) AS n_instances,
       count(DISTINCT PatientID) AS n_patients
FROM idc
WHERE Modality = 'CT'
  AND instanceCount >= 100
  AND series_size_MB > 50.0;

-- name: modality_breakdown
-- Group-by with counts over the whole table.
SELECT Modality AS modality,
       count(*) AS n_series,
       count(DISTINCT PatientID) AS n_patients,
       sum(instanceCount) AS n_instances
FROM idc
GROUP BY Modality
ORDER BY n_series DESC, modality;

-- name: older_chest_ct_by_collection_sex
-- Two-key group-by with a string range filter on PatientAge ('060Y' and up).
SELECT collection_id,
       PatientSex AS patient_sex,
       count(*) AS n_series,
       count(DISTINCT PatientID) AS n_patients
FROM idc
WHERE Modality = 'CT'
  AND BodyPartExamined = 'CHEST'
  AND PatientAge LIKE '%Y'
  AND PatientAge >= '060Y'
GROUP BY collection_id, PatientSex
ORDER BY n_series DESC, collection_id, patient_sex NULLS LAST
LIMIT 20;

-- name: ct_seg_studies_selfjoin
-- Self-join on StudyInstanceUID: studies holding both a CT and a SEG series.
SELECT count(DISTINCT ct.StudyInstanceUID) AS n_studies,
       count(DISTINCT ct.PatientID) AS n_patients
FROM idc ct
JOIN idc seg ON ct.StudyInstanceUID = seg.StudyInstanceUID
WHERE ct.Modality = 'CT'
  AND seg.Modality = 'SEG';

-- name: ct_pt_studies_by_collection
-- Self-join plus group-by: PET/CT studies (CT and PT series in one study) per collection.
SELECT ct.collection_id AS collection_id,
       count(DISTINCT ct.StudyInstanceUID) AS n_studies,
       count(DISTINCT ct.PatientID) AS n_patients
FROM idc ct
JOIN idc pt ON ct.StudyInstanceUID = pt.StudyInstanceUID
WHERE ct.Modality = 'CT'
  AND pt.Modality = 'PT'
GROUP BY ct.collection_id
ORDER BY n_studies DESC, collection_id;

-- name: multimodal_patients
-- Patients with series of at least 3 distinct modalities, histogram by modality count.
SELECT n_modalities,
       count(*) AS n_patients
FROM (
    SELECT PatientID,
           count(DISTINCT Modality) AS n_modalities
    FROM idc
    GROUP BY PatientID
    HAVING count(DISTINCT Modality) >= 3
) t
GROUP BY n_modalities
ORDER BY n_modalities;

-- name: multimodal_imaging_with_annotation
-- count(DISTINCT CASE ...) variant: patients with >= 2 acquisition modalities
-- among CT/MR/PT/NM and at least one segmentation or RT structure set.
SELECT count(*) AS n_patients,
       sum(n_series) AS n_series
FROM (
    SELECT PatientID,
           count(*) AS n_series
    FROM idc
    GROUP BY PatientID
    HAVING count(DISTINCT CASE WHEN Modality IN ('CT', 'MR', 'PT', 'NM') THEN Modality END) >= 2
       AND count(DISTINCT CASE WHEN Modality IN ('SEG', 'RTSTRUCT') THEN Modality END) >= 1
) t;

-- name: multimodal_imaging_with_annotation_rewritten
-- Same cohort and result as multimodal_imaging_with_annotation, written without
-- multiple DISTINCT aggregates: (PatientID, Modality) pairs are de-duplicated
-- first, then counted with plain sums. In DataFusion 55 (datafusion-python
-- 55.0.0, 2 partitions) the original took 17-21 s against 0.1-0.3 s for this
-- form; DuckDB runs both in ~0.3 s. Keep both: the pair shows whether medlake
-- inherits DataFusion's slow path for several count(DISTINCT ...) per group (medlake's
-- optimizer rule in src/optimize/multi_distinct.rs now plans the original in this shape).
SELECT count(*) AS n_patients,
       sum(s.n_series) AS n_series
FROM (
    SELECT PatientID,
           count(*) AS n_series
    FROM idc
    GROUP BY PatientID
) s
JOIN (
    SELECT PatientID,
           sum(CASE WHEN Modality IN ('CT', 'MR', 'PT', 'NM') THEN 1 ELSE 0 END) AS n_acquisition,
           sum(CASE WHEN Modality IN ('SEG', 'RTSTRUCT') THEN 1 ELSE 0 END) AS n_annotation
    FROM (SELECT DISTINCT PatientID, Modality FROM idc) d
    GROUP BY PatientID
) m ON s.PatientID = m.PatientID
WHERE m.n_acquisition >= 2
  AND m.n_annotation >= 1;

-- name: lung_chest_description_like
-- LIKE on SeriesDescription (case-folded with lower()), top collections.
SELECT collection_id,
       count(*) AS n_series,
       sum(instanceCount) AS n_instances
FROM idc
WHERE Modality = 'CT'
  AND (lower(SeriesDescription) LIKE '%lung%' OR lower(SeriesDescription) LIKE '%chest%')
GROUP BY collection_id
ORDER BY n_series DESC, collection_id
LIMIT 15;

-- name: top_collections_by_size
-- Top-N collections by total size.
SELECT collection_id,
       count(*) AS n_series,
       count(DISTINCT PatientID) AS n_patients,
       sum(instanceCount) AS n_instances,
       round(sum(series_size_MB) / 1024.0, 3) AS size_gb
FROM idc
GROUP BY collection_id
ORDER BY size_gb DESC, collection_id
LIMIT 10;

-- name: ct_studies_per_year
-- Group-by on an expression over a string date column.
SELECT substr(StudyDate, 1, 4) AS study_year,
       count(DISTINCT StudyInstanceUID) AS n_studies,
       count(*) AS n_series
FROM idc
WHERE Modality = 'CT'
  AND StudyDate IS NOT NULL
GROUP BY substr(StudyDate, 1, 4)
ORDER BY study_year;

-- name: largest_ct_series_per_collection
-- Window function: the largest CT series of each collection, top 20 of those.
SELECT collection_id,
       SeriesInstanceUID AS series_instance_uid,
       instanceCount AS instance_count,
       series_size_MB AS series_size_mb
FROM (
    SELECT collection_id,
           SeriesInstanceUID,
           instanceCount,
           series_size_MB,
           row_number() OVER (PARTITION BY collection_id
                              ORDER BY series_size_MB DESC, SeriesInstanceUID) AS rn
    FROM idc
    WHERE Modality = 'CT'
) t
WHERE rn = 1
ORDER BY series_size_mb DESC, collection_id
LIMIT 20;

-- name: patients_in_several_collections
-- IN-subquery: series of patients whose PatientID appears in more than one collection
-- (typically an original collection plus an analysis-results collection).
SELECT count(DISTINCT PatientID) AS n_patients,
       count(*) AS n_series,
       count(DISTINCT collection_id) AS n_collections
FROM idc
WHERE PatientID IN (
    SELECT PatientID
    FROM idc
    GROUP BY PatientID
    HAVING count(DISTINCT collection_id) > 1
);
