"""Tests against third-party tools, run on demand."""
