-- Chest CTs of women over 50 with slices of 1.25 mm or thinner.
-- slice_spacing_mm is measured from ImagePositionPatient along the slice normal,
-- not read from SliceThickness.
SELECT st.PatientID, st.patient_age_years, s.SeriesDescription, s.slice_count,
       s.slice_spacing_mm
FROM series s
JOIN studies st
  ON st.collection = s.collection AND st.StudyInstanceUID = s.StudyInstanceUID
WHERE s.Modality = 'CT'
  AND s.BodyPartExamined = 'CHEST'
  AND st.PatientSex = 'F'
  AND st.patient_age_years > 50
  AND s.slice_spacing_mm <= 1.25
ORDER BY st.PatientID, s.SeriesDescription;
