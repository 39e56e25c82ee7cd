"""The worker daemon: the procrastinate app and its tasks, the pipeline, the lifecycle (the only
mover of a generation), the rescuer, outgoing webhooks and provider rate limits."""
