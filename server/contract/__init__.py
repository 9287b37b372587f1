"""The contracts shared by the server, `training/`, `exporters/` and the load tests: `model.json`
(`manifest.py`: tensor specs, datatypes, batching, features, drift reference, lineage), the alias
names (`aliases.py`), which files are tables (`tables.py`), and how timestamps and library
versions are stamped (`provenance.py`).

Imports nothing else of the server, so every part of it may depend on the contract without
an import circle (tests/unit/test_architecture.py checks it).
"""
