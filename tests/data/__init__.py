"""Tests of compatctl.data."""
