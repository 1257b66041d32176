-- Reports that say a nodule is there (not "no nodule", not "possible nodule", not "has
-- resolved"), with the CT series of the study each report was linked to, and the BM25 score.
SELECT r.report_id, l.link_method, s.PatientID, s.SeriesNumber, s.SeriesDescription,
       round(r.score, 3) AS score
FROM report_search('nodule', 'affirmed') r
JOIN report_links l ON l.collection = r.collection AND l.report_id = r.report_id
JOIN series s ON s.StudyInstanceUID = l.StudyInstanceUID
WHERE s.Modality = 'CT'
ORDER BY r.report_id, s.SeriesNumber;
