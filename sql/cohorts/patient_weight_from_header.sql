-- Every header element is reachable, not only the typed columns: PatientWeight and
-- KVP (0018,0060) read through dicom_tag() from the full header of each instance.
SELECT PatientID,
       CAST(dicom_tag(dicom_json, 'PatientWeight') AS DOUBLE) AS weight_kg,
       dicom_tag(dicom_json, '(0018,0060)') AS kvp,
       count(*) AS instances
FROM instances
GROUP BY PatientID, dicom_tag(dicom_json, 'PatientWeight'), dicom_tag(dicom_json, '(0018,0060)')
ORDER BY PatientID;
