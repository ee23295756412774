"""The MLflow model registry side: sweeps, champion/challenger promotion and its lease."""
