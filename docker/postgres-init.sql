-- The uConnect user store lives in its own database next to Airflow's metadata database.
-- sisbridge creates its tables there on the first push.
create database userstore;
-- The warehouse's DuckLake catalog: one schema per school (school_<id>), created on its first run.
create database lake;
