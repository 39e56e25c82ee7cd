"""imagejobs HTTP API: a thin Litestar face over the database and the SSE hub."""
