-- Traffic governance (issue 15). A key's own limits (LiteLLM's names: rpm_limit, tpm_limit),
-- as JSON: an empty object is unlimited.
ALTER TABLE virtual_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
