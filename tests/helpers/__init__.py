"""Data builders shared by several test modules (result stores, DICOM files, the import graph)."""
