-- The feedback database next to Airflow's metadata database (Neon in production).
CREATE DATABASE feedback OWNER airflow;
