"""Capture: a sampled tap on the data plane that writes what was served as Parquet (`record.py`: the schema)."""
