-- Issue 16, part 4: batches. `n` on a creation and POST /v1/generations/batch create their
-- generations in one transaction; a `imagejobs_batches` row ties them (`batch_id`) and holds
-- the batch's Idempotency-Key, so a repeated request answers with the same generations. Private
-- (the imagejobs_ prefix: imagejobs_enable_rls closes it to Supabase's roles).

CREATE TABLE imagejobs_batches (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL,
    idempotency_key text NULL CHECK (length(idempotency_key) <= 255),
    size integer NOT NULL CHECK (size BETWEEN 1 AND 1000),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX imagejobs_batches_idempotency_idx
    ON imagejobs_batches (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

ALTER TABLE image_generations
    ADD COLUMN batch_id uuid NULL REFERENCES imagejobs_batches (id) ON DELETE SET NULL;
CREATE INDEX image_generations_batch_idx ON image_generations (batch_id) WHERE batch_id IS NOT NULL;
-- The item's place in its batch, so a batch answers in the order it was asked.
ALTER TABLE image_generations
    ADD COLUMN batch_index integer NULL CHECK (batch_index >= 0);
