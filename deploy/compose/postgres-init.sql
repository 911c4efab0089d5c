-- Run once by the postgres image on an empty data directory
-- (/docker-entrypoint-initdb.d). One database per stateful guichet role:
-- no role reads another's tables. Owned by the POSTGRES_USER (guichet).
CREATE DATABASE guichet_dossier;
CREATE DATABASE guichet_routing;
CREATE DATABASE guichet_counter;
CREATE DATABASE guichet_scan;
CREATE DATABASE guichet_telephony;
CREATE DATABASE guichet_appointment;
CREATE DATABASE guichet_signature;
CREATE DATABASE guichet_notification;
CREATE DATABASE guichet_email;
CREATE DATABASE guichet_portal;
CREATE DATABASE guichet_indicators;
