"""What both exporter pipelines share: checks, graph tools, reference tables, model.json, publishing."""
