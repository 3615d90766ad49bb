"""Triage notification to the RIS: HL7 v2.5.1 ORU^R01 over MLLP and FHIR R4 DiagnosticReport.

The package builds and sends the messages of one study result (``ris.outcome.StudyOutcome``). It
knows nothing of the job store or the worker: ``worker.notify`` writes the messages and puts them in
the outbox, and ``worker.destinations.hl7`` / ``worker.destinations.fhir`` deliver them with the
senders here.
"""
