-- The 5 series that look most like a given nodule-bearing chest CT (DEMO-007's, whose
-- nodules the findings table holds), by the built-in image embedding that `medlake
-- compute embeddings` stores, with the impression of each one's report where it has one.
SELECT n.rank, s.PatientID, s.SeriesDescription, round(n.score, 4) AS similarity,
       r.impression
FROM similar_series('2.25.228604216179413457324813898212670341032', 5) n
JOIN series s ON s.collection = n.collection AND s.SeriesInstanceUID = n.SeriesInstanceUID
LEFT JOIN report_links l ON l.collection = s.collection AND l.StudyInstanceUID = s.StudyInstanceUID
LEFT JOIN reports r ON r.collection = l.collection AND r.report_id = l.report_id
ORDER BY n.rank, r.report_id;
