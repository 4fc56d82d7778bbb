-- Authorization hardening (issue 10):
-- - model tags the policies read are normalised (tier and env names and values trimmed and
--   lowercase), and tags named like the policies' own attributes (tenant, owner) dropped.
UPDATE model_routes SET tags = COALESCE((
    SELECT jsonb_object_agg(
        CASE WHEN lower(t.key) IN ('tier', 'env') THEN lower(t.key) ELSE t.key END,
        CASE WHEN lower(t.key) IN ('tier', 'env') THEN lower(btrim(t.value)) ELSE t.value END)::text
    FROM jsonb_each_text(model_routes.tags::jsonb) AS t
    WHERE lower(t.key) NOT IN ('tenant', 'owner')
), '{}');
