-- gene_carriers: one row per (sample, annotated variant, transcript annotation) where the
-- sample carries the annotated ALT allele, with the sample's patient where one is linked
-- (links are per collection, as sample IDs are).
-- "Carriers of a HIGH-impact variant in EGFR" is then
--   SELECT DISTINCT PatientID FROM gene_carriers WHERE gene = 'EGFR' AND impact = 'HIGH'
CREATE VIEW gene_carriers AS
SELECT g.collection, e.gene, e.gene_id, e.impact, e.effect, e.feature, e.hgvs_c, e.hgvs_p,
       v.chrom, v.pos, v."ref", e.allele, e.alt_index,
       g.sample_id, g.alleles, g.alt_count, l."PatientID", e.variant_id
FROM variant_effects e
JOIN variants v ON v.variant_id = e.variant_id
JOIN genotypes g ON g.variant_id = e.variant_id
LEFT JOIN sample_links l ON l.sample_id = g.sample_id AND l.collection = g.collection
WHERE CASE WHEN e.alt_index IS NOT NULL THEN array_has(g.alleles, e.alt_index)
           ELSE g.alt_count > 0 END
