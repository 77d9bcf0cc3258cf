-- The managed image a host's container was last built from (for `image_outdated`).
ALTER TABLE hosts ADD COLUMN image TEXT;
