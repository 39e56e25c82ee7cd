-- imagejobs tables. The schema is a public interface: users query and insert with plain SQL.
-- Behaviour every writer must get (enqueue, counters, events, notifications) lives in 002.

-- True when a text or JSON value carries an inline image: a data: URL or a long base64 run.
-- Used by CHECK constraints so no writer can put image bytes in the database.
CREATE FUNCTION imagejobs_has_inline_image(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT value IS NOT NULL AND (
        value ~* 'data:[a-z0-9.+-]+/[a-z0-9.+-]+[^,]{0,200};base64,'
        OR value ~ '(iVBORw0KGgo|/9j/[0-9A-Za-z+/]|R0lGOD|UklGR)[A-Za-z0-9+/]{200,}'
        OR value ~ '([A-Za-z0-9+/]{250}){16}'
    )
$$;

CREATE FUNCTION imagejobs_is_http_url(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT value IS NULL OR (value ~* '^https?://[^\s/$.?#][^\s]*$' AND length(value) <= 4096)
$$;

CREATE TABLE projects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    image_count integer NOT NULL DEFAULT 0 CHECK (image_count >= 0),
    pending_count integer NOT NULL DEFAULT 0 CHECK (pending_count >= 0),
    processing_count integer NOT NULL DEFAULT 0 CHECK (processing_count >= 0),
    completed_count integer NOT NULL DEFAULT 0 CHECK (completed_count >= 0),
    failed_count integer NOT NULL DEFAULT 0 CHECK (failed_count >= 0),
    cancelled_count integer NOT NULL DEFAULT 0 CHECK (cancelled_count >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_workspace_created_idx ON projects (workspace_id, created_at DESC, id DESC);

CREATE TABLE image_generations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL,
    user_id uuid NULL,
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    prompt text NOT NULL CHECK (length(prompt) BETWEEN 1 AND 8000),
    prompt_spec jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(prompt_spec) = 'object'),
    provider text NOT NULL DEFAULT 'local' CHECK (provider IN ('local', 'openai', 'google', 'fal')),
    model text NOT NULL DEFAULT '',
    original_image_url text NULL,
    result_image_url text NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    step text NOT NULL DEFAULT 'queued'
        CHECK (step IN ('queued', 'fetching', 'uploading', 'preparing', 'processing', 'saving',
                        'completed', 'failed', 'cancelled')),
    progress integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    error_code text NULL CHECK (error_code IN (
        'not_found', 'source_unreachable', 'no_result', 'content_policy', 'result_unreachable',
        'provider_error', 'timeout', 'mask_missing', 'mask_invalid', 'source_unreadable',
        'storage_error', 'cancelled')),
    error_message text NULL CHECK (length(error_message) <= 4000),
    version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    parent_id uuid NULL REFERENCES image_generations (id) ON DELETE SET NULL,
    metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    provider_job_id text NULL,
    job_id bigint NULL,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    node_id text NULL,
    workflow_id uuid NULL,
    webhook_url text NULL,
    webhook_events_filter text[] NULL
        CHECK (webhook_events_filter <@ ARRAY['start', 'progress', 'completed']),
    idempotency_key text NULL CHECK (length(idempotency_key) <= 255),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz NULL,
    finished_at timestamptz NULL,
    CONSTRAINT image_generations_urls_http CHECK (
        imagejobs_is_http_url(original_image_url)
        AND imagejobs_is_http_url(result_image_url)
        AND imagejobs_is_http_url(webhook_url)
    ),
    CONSTRAINT image_generations_no_inline_images CHECK (
        NOT imagejobs_has_inline_image(prompt)
        AND NOT imagejobs_has_inline_image(prompt_spec::text)
        AND NOT imagejobs_has_inline_image(metadata::text)
        AND NOT imagejobs_has_inline_image(error_message)
    )
);
-- GET /v1/generations: newest first within a project (or workspace), keyset on (created_at, id).
CREATE INDEX image_generations_project_created_idx
    ON image_generations (project_id, created_at DESC, id DESC);
CREATE INDEX image_generations_workspace_created_idx
    ON image_generations (workspace_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX image_generations_idempotency_idx
    ON image_generations (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX image_generations_parent_idx ON image_generations (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX image_generations_job_idx ON image_generations (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX image_generations_provider_job_idx
    ON image_generations (provider, provider_job_id) WHERE provider_job_id IS NOT NULL;
CREATE INDEX image_generations_active_idx
    ON image_generations (status, updated_at) WHERE status IN ('pending', 'processing');

-- Append-only audit trail and the source of SSE replays. project_id and workspace_id are
-- copied from the generation so notifications and project streams need no join.
CREATE TABLE image_events (
    id bigserial PRIMARY KEY,
    generation_id uuid NOT NULL REFERENCES image_generations (id) ON DELETE CASCADE,
    project_id uuid NOT NULL,
    workspace_id uuid NOT NULL,
    ts timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind text NOT NULL CHECK (kind IN ('status', 'progress', 'log', 'error', 'webhook')),
    status text NOT NULL,
    step text NOT NULL,
    progress integer NOT NULL CHECK (progress BETWEEN 0 AND 100),
    message text NULL,
    data jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT image_events_no_inline_images CHECK (
        NOT imagejobs_has_inline_image(message) AND NOT imagejobs_has_inline_image(data::text)
    )
);
CREATE INDEX image_events_generation_idx ON image_events (generation_id, id);
CREATE INDEX image_events_project_idx ON image_events (project_id, id);

CREATE TABLE workflow_nodes (
    id text NOT NULL,
    workflow_id uuid NOT NULL,
    workspace_id uuid NULL,
    node_type text NOT NULL DEFAULT 'image',
    node_data jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(node_data) = 'object'),
    position jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, id),
    CONSTRAINT workflow_nodes_no_inline_images CHECK (NOT imagejobs_has_inline_image(node_data::text))
);

CREATE TABLE webhook_deliveries (
    id text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),
    provider text NOT NULL,
    generation_id uuid NULL REFERENCES image_generations (id) ON DELETE SET NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT webhook_deliveries_no_inline_images CHECK (NOT imagejobs_has_inline_image(payload::text))
);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL,
    name text NOT NULL DEFAULT '',
    prefix text NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NULL,
    revoked_at timestamptz NULL
);
CREATE INDEX api_keys_workspace_idx ON api_keys (workspace_id);

CREATE TABLE workspace_members (
    workspace_id uuid NOT NULL,
    user_id uuid NOT NULL,
    role text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user_idx ON workspace_members (user_id);
