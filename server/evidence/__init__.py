"""Evidence of what each load of a model version showed, in time windows (`recorder.py`)."""
