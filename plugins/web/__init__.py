"""What this project adds to Airflow's api-server (registered by plugins/mysqlbackup_plugin.py)."""
