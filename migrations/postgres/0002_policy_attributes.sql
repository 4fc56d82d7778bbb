-- Attributes the authorization policies read: the roles a virtual key acts with, and the tags
-- of a model (e.g. {"tier": "premium", "env": "staging"}). JSON text.
ALTER TABLE virtual_keys ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';
ALTER TABLE model_routes ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
