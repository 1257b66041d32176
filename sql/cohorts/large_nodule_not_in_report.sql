-- CT series with a nodule candidate of 8 mm or larger (the findings table, filled by
-- `medlake compute findings`) whose linked report does not affirm a nodule: what the
-- image shows and the report may have missed.
SELECT s.PatientID, s.SeriesDescription, l.report_id,
       count(*) AS nodules_8mm_plus, round(max(f.diameter_mm), 1) AS largest_mm
FROM findings f
JOIN series s ON s.collection = f.collection AND s.SeriesInstanceUID = f.SeriesInstanceUID
JOIN report_links l ON l.collection = s.collection AND l.StudyInstanceUID = s.StudyInstanceUID
WHERE f.kind = 'nodule' AND f.diameter_mm >= 8
  AND NOT EXISTS (
    SELECT 1 FROM report_search('nodule', 'affirmed') r
    WHERE r.collection = l.collection AND r.report_id = l.report_id)
GROUP BY s.PatientID, s.SeriesDescription, l.report_id
ORDER BY s.PatientID, l.report_id;
