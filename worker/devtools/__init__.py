"""Development tools: the one-process dev stack, the embedded Postgres, the benchmark."""
