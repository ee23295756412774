"""Training: the loop, its objectives, checkpoints, processes and preemption, the train step."""
