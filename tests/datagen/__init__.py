"""Tests of the training-data generator (issue 6)."""
