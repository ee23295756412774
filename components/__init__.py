"""KFP components: one file per pipeline step, each a thin wrapper over one library function."""
