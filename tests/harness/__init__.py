"""What tests and benchmarks share: servers on loopback and the data they are fed.

Real servers (redis-server, PostgreSQL, Orthanc, a small PACS, our own node and workers as
subprocesses) started on ports picked free at run time, and the DICOM datasets built from the
shared chest X-rays. Tests reach these through the fixtures of ``tests/conftest.py``; benchmarks
import them directly and import no test module (an import contract holds that).
"""
