"""Who is asking: API keys, Supabase user JWTs, signed provider webhooks, one JWKS cache."""
