"""ArrowTuner's application data: schemas, the arrow JSON import, startup checks and demo data.

Stdlib only. Functions return reports and raise :mod:`backup_sidecar.errors` subclasses; the CLI
decides what to print and which exit code to use.
"""
