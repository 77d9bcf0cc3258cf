-- Whether a host runs the desktop image (a desktop in the browser besides SSH).
ALTER TABLE hosts ADD COLUMN desktop BOOLEAN NOT NULL DEFAULT FALSE;
