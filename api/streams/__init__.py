"""Server-Sent Events: the hub (one LISTEN per process) and the four streams."""
