-- A WireGuard egress (one peer, one tunnel address) carries one host: the database holds the
-- rule, not only a check before the insert. A binding to a WireGuard egress names it again in
-- exclusive_egress_id, which is unique; bindings to proxy egresses leave it NULL.
ALTER TABLE bindings ADD COLUMN exclusive_egress_id UUID;
-- Existing installs: the oldest binding of each WireGuard egress holds it (a second one, which
-- the old check should have refused, is left as it is and cannot be repeated).
UPDATE bindings SET exclusive_egress_id = egress_ip_id
 WHERE id IN (
    SELECT DISTINCT ON (b.egress_ip_id) b.id FROM bindings b
      JOIN egress_ips e ON e.id = b.egress_ip_id
     WHERE e.tunnel_type = 'wireguard'
     ORDER BY b.egress_ip_id, b.created_at, b.id
 );
CREATE UNIQUE INDEX bindings_exclusive_egress ON bindings (exclusive_egress_id);
