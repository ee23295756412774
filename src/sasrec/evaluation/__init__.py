"""Evaluation: metrics against baselines, breakdowns, the report, the evaluate step."""
