-- Series whose slices are not evenly spaced: a missing slice, or spacing that varies.
-- Such series must be resampled (or excluded) before any 3-D analysis.
SELECT PatientID, SeriesDescription, slice_count, slice_spacing_mm,
       spacing_max_deviation_mm, has_missing_slices
FROM series
WHERE has_missing_slices OR spacing_max_deviation_mm > 0.01
ORDER BY PatientID, SeriesDescription;
