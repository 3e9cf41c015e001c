-- The uConnect user store lives in its own database next to Airflow's metadata database.
-- sisbridge creates its tables there on the first push.
create database userstore;
