"""Storage: the engine and sessions, the tables with their enums and status groups, SQL
helpers and migrations. Imports only the base (settings, errors, clock)."""
