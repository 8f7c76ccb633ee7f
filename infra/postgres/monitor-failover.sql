-- Failover timings of the pg_auto_failover monitor, for the cluster of infra/services.sh
-- (CX_SERVICES_MODE=cluster) and docker-compose.yml alike. pg_auto_failover's defaults take
-- about 30 s to act. Here the monitor checks every node each second and calls a node unhealthy
-- 5 s after its last report and a failed check; a primary that cannot be reached is given 10 s
-- to demote itself: twice the nodes' timeout.network_partition_timeout (5 s, set by pg_autoctl
-- config), after which a primary cut off from the monitor and its standby stops taking writes,
-- so that two primaries never take writes at once.
ALTER SYSTEM SET pgautofailover.health_check_period = 1000;
ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000;
ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1;
ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500;
ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 5000;
ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 10000;
SELECT pg_reload_conf();
