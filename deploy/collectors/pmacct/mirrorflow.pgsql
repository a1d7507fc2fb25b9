-- Table for nfacctd's pgsql plugin (nfacctd.conf, sql_optimize_clauses: one column per
-- aggregated primitive, named as pmacct names them). One row per flow record. Addresses
-- are text: NODATA/SKIPDATA rows have none (''), which INET does not take.
CREATE TABLE IF NOT EXISTS flows (
  peer_ip_src TEXT NOT NULL,
  export_proto_sysid BIGINT NOT NULL,
  iface_in BIGINT NOT NULL,
  iface_out BIGINT NOT NULL,
  ip_src TEXT NOT NULL,
  ip_dst TEXT NOT NULL,
  port_src INT NOT NULL,
  port_dst INT NOT NULL,
  ip_proto SMALLINT NOT NULL,
  tcp_flags SMALLINT NOT NULL,
  timestamp_start TIMESTAMP WITHOUT TIME ZONE NOT NULL,
  timestamp_end TIMESTAMP WITHOUT TIME ZONE NOT NULL,
  flow_dir SMALLINT NOT NULL,
  fwd_status SMALLINT NOT NULL,
  obs_point BIGINT NOT NULL,
  icmp_type_code INT NOT NULL,
  icmp6_type_code INT NOT NULL,
  retrans BIGINT NOT NULL,
  zero_win BIGINT NOT NULL,
  rtt_us BIGINT NOT NULL,
  mirrored_packets BIGINT NOT NULL,
  mirror_session TEXT NOT NULL,
  log_status SMALLINT NOT NULL,
  skipped_packets BIGINT NOT NULL,
  -- NULL on NODATA/SKIPDATA rows (log_status 1/2): nfacctd leaves out counters they do not carry.
  packets BIGINT,
  bytes BIGINT
);
CREATE INDEX IF NOT EXISTS flows_start ON flows (timestamp_start);
