"""Tests of compatctl.models."""
