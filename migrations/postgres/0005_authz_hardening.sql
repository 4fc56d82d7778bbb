-- Authorization hardening (issue 10):
-- - an admin key may act for a user of its tenant: the keys it creates or updates are then
--   bound to that user and the user's teams only;
-- - names that are no longer roles of the tenant are taken off admin keys (deleting a role
--   now does so itself), so a role created later under such a name grants them nothing;
-- - model tags the policies read are normalised (tier and env names and values trimmed and
--   lowercase), and tags named like the policies' own attributes (tenant, owner) dropped.
ALTER TABLE admin_keys ADD COLUMN user_id TEXT REFERENCES users(id);

UPDATE admin_keys SET roles = COALESCE((
    SELECT json_agg(held.name ORDER BY held.n)::text
    FROM json_array_elements_text(admin_keys.roles::json) WITH ORDINALITY AS held(name, n)
    WHERE held.name IN ('admin', 'developer', 'auditor', 'finance', 'manager', 'qa', 'member')
       OR EXISTS (SELECT 1 FROM roles r WHERE r.tenant_id = admin_keys.tenant_id AND r.name = held.name)
), '[]');

UPDATE model_routes SET tags = COALESCE((
    SELECT jsonb_object_agg(
        CASE WHEN lower(t.key) IN ('tier', 'env') THEN lower(t.key) ELSE t.key END,
        CASE WHEN lower(t.key) IN ('tier', 'env') THEN lower(btrim(t.value)) ELSE t.value END)::text
    FROM jsonb_each_text(model_routes.tags::jsonb) AS t
    WHERE lower(t.key) NOT IN ('tenant', 'owner')
), '{}');
