"""Orchestration: stages that load data and models, call the pure analysis functions and write artifacts."""
