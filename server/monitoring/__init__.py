"""Drift monitoring: live inputs and predictions of each loaded version compared with its training data."""
