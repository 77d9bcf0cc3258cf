-- Egress settings sealed at rest: `secrets` holds them encrypted (AES-256-GCM, base64 of nonce
-- and ciphertext) under the sealing key named by `key_id`; `settings` no longer carries them.
ALTER TABLE egress_ips ADD COLUMN secrets TEXT;
ALTER TABLE egress_ips ADD COLUMN key_id TEXT;
