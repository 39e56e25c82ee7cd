-- Issue 12 (hardening): what the worker acts on is no longer client metadata. An edit's mode,
-- its mask and the generation it was made from live in columns of their own, which neither
-- `POST /v1/generations` nor a Supabase client (column-level INSERT grants, sql/008) can write;
-- `metadata` is the client's, stored and returned, never read by the worker or the triggers.

ALTER TABLE image_generations
    ADD COLUMN edit_mode text NULL CHECK (edit_mode IN ('add', 'remove')),
    ADD COLUMN mask_url text NULL CHECK (imagejobs_is_http_url(mask_url)),
    ADD COLUMN edited_from uuid NULL REFERENCES image_generations (id) ON DELETE SET NULL;

-- Edits made before this migration carried these in metadata; only rows the API made as edits
-- (a parent, which no client can set) are trusted with them.
UPDATE image_generations
   SET edit_mode = CASE WHEN metadata->>'editMode' = 'remove' THEN 'remove' ELSE 'add' END,
       mask_url = CASE WHEN imagejobs_is_http_url(metadata->>'maskUrl') THEN metadata->>'maskUrl' END,
       edited_from = (SELECT p.id FROM image_generations p
                       WHERE p.id::text = image_generations.metadata->>'editedFrom')
 WHERE parent_id IS NOT NULL AND metadata ? 'editMode';

-- Which task runs a generation: edits (an edit_mode) are inpainting.
DROP FUNCTION imagejobs_task_for(jsonb);
CREATE FUNCTION imagejobs_task_for(edit_mode text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN edit_mode IS NOT NULL THEN 'edit_image' ELSE 'generate_image' END
$$;

-- The two trigger functions as sql/004 left them, but for the task they choose.
CREATE OR REPLACE FUNCTION imagejobs_generations_before_insert() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    _workspace_id uuid;
BEGIN
    SELECT workspace_id INTO _workspace_id FROM projects WHERE id = NEW.project_id;
    IF NOT FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('project %s does not exist', NEW.project_id),
            COLUMN = 'project_id';
    END IF;
    IF NEW.workspace_id IS NULL THEN
        NEW.workspace_id := _workspace_id;
    ELSIF NEW.workspace_id <> _workspace_id THEN
        RAISE check_violation USING
            MESSAGE = 'workspace_id does not match the project''s workspace',
            COLUMN = 'workspace_id';
    END IF;

    NEW.prompt := coalesce(NULLIF(btrim(NEW.prompt), ''), imagejobs_compose_prompt(NEW.prompt_spec));
    IF NEW.model IS NULL OR NEW.model = '' THEN
        NEW.model := imagejobs_default_model(NEW.provider);
    END IF;
    IF NOT NEW.metadata ? 'model' THEN
        NEW.metadata := NEW.metadata || jsonb_build_object('model', NEW.provider || ':' || NEW.model);
    END IF;

    IF NEW.status = 'pending' THEN
        NEW.step := 'queued';
        NEW.progress := 0;
        IF NEW.job_id IS NULL THEN
            NEW.job_id := imagejobs_defer_generation(NEW.id, imagejobs_task_for(NEW.edit_mode));
        END IF;
    ELSIF NEW.status IN ('completed', 'failed', 'cancelled') THEN
        NEW.step := NEW.status;
        NEW.finished_at := coalesce(NEW.finished_at, now());
        IF NEW.status = 'completed' THEN
            NEW.progress := 100;
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION imagejobs_generations_before_update() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.project_id IS DISTINCT FROM OLD.project_id
       AND NOT EXISTS (SELECT 1 FROM projects WHERE id = NEW.project_id AND workspace_id = NEW.workspace_id) THEN
        RAISE check_violation USING
            MESSAGE = 'a generation can only move to a project of its own workspace',
            COLUMN = 'project_id';
    END IF;

    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NOT (
            (OLD.status = 'pending' AND NEW.status IN ('processing', 'failed', 'cancelled'))
            OR (OLD.status = 'processing' AND NEW.status IN ('completed', 'failed', 'cancelled', 'pending'))
            OR (OLD.status = 'failed' AND NEW.status = 'pending')
        ) THEN
            RAISE check_violation USING
                MESSAGE = format('invalid status transition %s -> %s', OLD.status, NEW.status),
                COLUMN = 'status';
        END IF;

        CASE NEW.status
        WHEN 'processing' THEN
            NEW.started_at := coalesce(NEW.started_at, now());
        WHEN 'pending' THEN
            NEW.step := 'queued';
            NEW.progress := 0;
            NEW.error_code := NULL;
            NEW.error_message := NULL;
            NEW.result_image_url := NULL;
            NEW.finished_at := NULL;
            NEW.provider_job_id := NULL;
            IF OLD.status = 'failed' AND NEW.job_id IS NOT DISTINCT FROM OLD.job_id THEN
                NEW.job_id := imagejobs_defer_generation(NEW.id, imagejobs_task_for(NEW.edit_mode));
            END IF;
        WHEN 'completed' THEN
            NEW.step := 'completed';
            NEW.progress := 100;
            NEW.error_code := NULL;
            NEW.error_message := NULL;
            NEW.finished_at := now();
        WHEN 'failed' THEN
            NEW.step := 'failed';
            NEW.error_code := coalesce(NEW.error_code, 'provider_error');
            NEW.finished_at := now();
        WHEN 'cancelled' THEN
            NEW.step := 'cancelled';
            NEW.error_code := 'cancelled';
            NEW.error_message := coalesce(NEW.error_message, 'Cancelled');
            NEW.finished_at := now();
            IF OLD.job_id IS NOT NULL THEN
                -- todo -> cancelled (never runs); doing -> abort requested (the worker stops it)
                PERFORM procrastinate_cancel_job_v1(OLD.job_id, true, false);
            END IF;
            IF OLD.provider_job_id IS NOT NULL THEN
                -- The provider may still be working for us: ask it to stop (a job of its own,
                -- since the cancelled job will not run).
                PERFORM procrastinate_defer_jobs_v1(ARRAY[ROW(
                    'images', 'cancel_provider_job', 0, NULL, NULL,
                    jsonb_build_object('generation_id', NEW.id), NULL
                )::procrastinate_job_to_defer_v1]);
            END IF;
        END CASE;
    END IF;

    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- The notification also names the canvas node, so workflow streams need no lookup.

-- CREATE OR REPLACE reset SECURITY DEFINER and the search_path (see sql/008).
SELECT imagejobs_secure_trigger_functions();
