-- Patients carrying a HIGH-impact EGFR variant (from the snpEff/VEP annotation of their
-- VCF, through the gene_carriers view), with their CT series, and whether a report of
-- theirs says a nodule is there.
WITH nodule_patients AS (
  SELECT DISTINCT rp.PatientID
  FROM report_search('nodule', 'affirmed') r
  JOIN reports rp ON rp.collection = r.collection AND rp.report_id = r.report_id
)
SELECT c.PatientID, c.sample_id, c.effect, c.hgvs_p, s.SeriesNumber, s.SeriesDescription,
       n.PatientID IS NOT NULL AS report_affirms_nodule
FROM gene_carriers c
JOIN series s ON s.PatientID = c.PatientID AND s.Modality = 'CT'
LEFT JOIN nodule_patients n ON n.PatientID = c.PatientID
WHERE c.gene = 'EGFR' AND c.impact = 'HIGH'
ORDER BY c.PatientID, s.SeriesNumber;
