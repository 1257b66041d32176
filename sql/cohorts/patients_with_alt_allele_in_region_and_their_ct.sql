-- Patients carrying an ALT allele in a chosen region, with their CT studies. The region is
-- the demo's 1000 Genomes excerpt, GRCh37 chr22:50,300,000-50,310,000; put a gene's
-- coordinates in its place. `in_region` takes "22" or "chr22" and prunes the scan.
WITH carriers AS (
  SELECT l.PatientID, g.sample_id, count(*) AS variants_with_alt,
         sum(g.alt_count) AS alt_alleles
  FROM genotypes g
  JOIN sample_links l ON l.sample_id = g.sample_id AND l.collection = g.collection
  WHERE in_region(g.chrom, g.pos, 'chr22:50300000-50310000') AND g.alt_count > 0
  GROUP BY l.PatientID, g.sample_id
)
SELECT c.PatientID, c.sample_id, c.variants_with_alt, c.alt_alleles,
       st.StudyDate, count(s.SeriesInstanceUID) AS ct_series
FROM carriers c
JOIN studies st ON st.PatientID = c.PatientID
JOIN series s ON s.StudyInstanceUID = st.StudyInstanceUID AND s.Modality = 'CT'
GROUP BY c.PatientID, c.sample_id, c.variants_with_alt, c.alt_alleles, st.StudyDate
ORDER BY c.PatientID, st.StudyDate;
