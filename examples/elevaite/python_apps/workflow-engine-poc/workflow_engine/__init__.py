"""Workflow engine (proof of concept): workflows, steps, schedules and executions."""
