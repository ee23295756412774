"""The KFP pipeline definition and its entry points (compile, local run)."""
