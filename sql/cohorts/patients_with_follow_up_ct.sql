-- Patients with more than one CT study: candidates for follow-up (growth) analysis.
SELECT PatientID, PatientSex, study_count, series_count, first_study_date, last_study_date
FROM patients
WHERE study_count > 1 AND array_has(modalities, 'CT')
ORDER BY PatientID;
