"""Result tables (Parquet, long format) and what is derived from them. Never imports torch."""
