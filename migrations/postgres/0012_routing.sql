-- Providers and resilience (issue 16): a model route's routing (JSON: strategy, attempts,
-- retry budget, timeouts; none: priority and the data plane's defaults). Deployment weights
-- live in the deployments' own JSON.
ALTER TABLE model_routes ADD COLUMN routing TEXT;
