-- The exchange's role, owning its database, on the primary of the cluster of infra/services.sh
-- (CX_SERVICES_MODE=cluster) and docker-compose.yml alike (pg_autoctl created the database).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'exchange') THEN
        CREATE ROLE exchange LOGIN PASSWORD 'exchange' CREATEDB;
    END IF;
END
$$;
ALTER DATABASE exchange OWNER TO exchange;
