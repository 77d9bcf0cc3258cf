-- The token that minted a token (API tokens with token:write may mint narrower ones). Revoking
-- a token revokes everything it minted, down the line.
ALTER TABLE api_tokens ADD COLUMN parent_id UUID REFERENCES api_tokens(id) ON DELETE CASCADE;
