"""The DICOM client both services use: C-STORE SCU, C-FIND verification, TLS contexts."""
