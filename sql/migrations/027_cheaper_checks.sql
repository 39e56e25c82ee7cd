-- Issue 18: the inline-image check, cheap for what it almost always sees.
--
-- `imagejobs_has_inline_image` guards prompts, specs, metadata, error messages, events, node
-- data and webhook payloads, and a CHECK runs on every UPDATE of its row, whatever changed:
-- measured, it was most of a step write's cost (its `{250}{16}` pattern alone takes ~0.1 ms
-- on a 30-character prompt, four times per generation update and twice per event). The same
-- three patterns now run only where they can match: a `data:` URL needs the text `data:`, a
-- base64 run behind an image signature needs 205 characters, a bare run 4,000. The answer is
-- the same for every input (tests/sql/test_inline_image_check.py holds it to the old one).
CREATE OR REPLACE FUNCTION imagejobs_has_inline_image(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN value IS NULL THEN false
        WHEN strpos(lower(value), 'data:') > 0
             AND value ~* 'data:[a-z0-9.+-]+/[a-z0-9.+-]+(?:;[^,;]{0,200}){0,8},' THEN true
        WHEN length(value) < 205 THEN false
        WHEN value ~ '(iVBORw0KGgo|/9j/[0-9A-Za-z+/]|R0lGOD|UklGR)(?:[A-Za-z0-9+/]|\r|\n|\\r|\\n){200,}' THEN true
        WHEN length(value) < 4000 THEN false
        ELSE value ~ '([A-Za-z0-9+/]{250}){16}'
    END
$$;
