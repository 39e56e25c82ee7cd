"""What the API and the worker share: settings, the database and its named queries, the
records, the error catalogue, logs and redaction, the outbound guard, the image gate."""
