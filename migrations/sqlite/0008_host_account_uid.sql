-- Each host's Linux account gets a uid of its own, unique on the machine (drawn from
-- SLUICE_HOST_UIDS when the host is made; hosts made before are given one at the next start).
ALTER TABLE hosts ADD COLUMN account_uid INTEGER;
CREATE UNIQUE INDEX hosts_account_uid ON hosts (account_uid);
