"""KFP components: one file per pipeline step, each a thin wrapper over `sasrec.steps`."""
