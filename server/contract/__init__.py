"""The contracts shared by the server, `training/` and `exporters/` (`model.json`: tensor specs,
datatypes, batching, features, drift reference, lineage).

Imports nothing else of the server, so every part of it may depend on the contract without
an import circle.
"""
