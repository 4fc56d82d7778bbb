-- Authorization hardening (issue 10):
-- - model tags the policies read are normalised (tier and env names and values trimmed and
--   lowercase), and tags named like the policies' own attributes (tenant, owner) dropped.
UPDATE model_routes SET tags = (
    SELECT json_group_object(
        CASE WHEN lower(t.key) IN ('tier', 'env') THEN lower(t.key) ELSE t.key END,
        CASE WHEN lower(t.key) IN ('tier', 'env') THEN lower(trim(t.value)) ELSE t.value END)
    FROM json_each(model_routes.tags) AS t
    WHERE lower(t.key) NOT IN ('tenant', 'owner')
);
