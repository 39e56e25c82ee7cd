-- Tightened guards, found by the database test suite.

-- No image bytes: also data: URLs that are not base64 (data:image/svg+xml,<svg...>) and base64
-- images wrapped in lines (raw newlines or JSON's \n escapes).
CREATE OR REPLACE FUNCTION imagejobs_has_inline_image(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT value IS NOT NULL AND (
        value ~* 'data:[a-z0-9.+-]+/[a-z0-9.+-]+(?:;[^,;]{0,200}){0,8},'
        OR value ~ '(iVBORw0KGgo|/9j/[0-9A-Za-z+/]|R0lGOD|UklGR)(?:[A-Za-z0-9+/]|\r|\n|\\r|\\n){200,}'
        OR value ~ '([A-Za-z0-9+/]{250}){16}'
    )
$$;

-- gpt-image-1 was retired by OpenAI; new generations default to its successor.
CREATE OR REPLACE FUNCTION imagejobs_default_model(provider text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE provider
        WHEN 'local' THEN 'pillow-v1'
        WHEN 'openai' THEN 'gpt-image-1.5'
        WHEN 'google' THEN 'gemini-2.5-flash-image'
        WHEN 'fal' THEN 'fal-ai/flux/dev'
    END
$$;

-- Node ids travel in NOTIFY payloads (8000 bytes at most): keep them short.
ALTER TABLE image_generations
    ADD CONSTRAINT image_generations_node_id_length CHECK (length(node_id) <= 200);
ALTER TABLE workflow_nodes
    ADD CONSTRAINT workflow_nodes_id_length CHECK (length(id) <= 200);

-- A generation's workspace is its project's: it cannot be changed on its own.
CREATE FUNCTION imagejobs_generations_workspace_guard() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.workspace_id IS DISTINCT FROM OLD.workspace_id
       AND NOT EXISTS (SELECT 1 FROM projects WHERE id = NEW.project_id AND workspace_id = NEW.workspace_id) THEN
        RAISE check_violation USING
            MESSAGE = 'workspace_id must be the workspace of the generation''s project',
            COLUMN = 'workspace_id';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER image_generations_workspace_guard
    BEFORE UPDATE OF workspace_id ON image_generations
    FOR EACH ROW EXECUTE FUNCTION imagejobs_generations_workspace_guard();
