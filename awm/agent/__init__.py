"""Agents on environments: the AWM text protocol, the agent loop, grading, evaluation, rollouts."""
